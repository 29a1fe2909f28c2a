"""PartialFCVMFLoss: VMFLoss with Partial FC's negative-class sampling and sharded means (the multi-process
equality of sharded and whole means is tests/runs/test_sharded_means.py)."""

import inspect

import pytest
import torch

from pml_vmf import GlobalMeanMiner, PartialFCVMFLoss, VMFLoss
from pml_vmf.sharding import ClassShard
from pml_vmf.training import build_training_loss


def test_vmf_loss_takes_pmls_shape_of_options_and_partial_fc_adds_its_own():
    assert [p for p in inspect.signature(VMFLoss).parameters] == [
        "num_classes", "embedding_size", "kappa", "learn_kappa", "margin", "kwargs"
    ]  # fmt: skip
    assert [p for p in inspect.signature(PartialFCVMFLoss).parameters] == [
        "num_classes", "embedding_size", "kappa", "shard", "sample_rate", "kwargs"
    ]  # fmt: skip
    assert VMFLoss(10, 4).shard is None and PartialFCVMFLoss(10, 4).shard is None


def test_without_a_shard_or_sampling_it_is_vmf_loss_exactly():
    torch.manual_seed(2)
    plain, partial = VMFLoss(7, 5, margin=0.1), PartialFCVMFLoss(7, 5, margin=0.1)
    means = torch.nn.functional.normalize(torch.randn(7, 5))
    plain.means.copy_(means)
    partial.means.copy_(means)
    z, labels = torch.randn(12, 5, requires_grad=True), torch.randint(0, 7, (12,))
    assert torch.equal(plain(z, labels), partial(z, labels))
    assert torch.equal(plain.predict(z), partial.predict(z))
    assert plain.state_dict().keys() == partial.state_dict().keys()


def test_a_shard_holds_its_range_of_means_and_must_count_the_losss_classes():
    shard = ClassShard.contiguous(10, rank=1, world_size=3)
    assert PartialFCVMFLoss(10, 4, shard=shard).means.shape == (3, 4)  # 1/W of the state
    with pytest.raises(ValueError, match="shard is of 10 classes, the loss of 12"):
        PartialFCVMFLoss(12, 4, shard=ClassShard.contiguous(10, rank=0, world_size=2))
    miner = GlobalMeanMiner(PartialFCVMFLoss(10, 4, shard=ClassShard.contiguous(10, rank=2, world_size=3)))
    assert miner.class_sums.shape == (3, 4) and miner.class_counts.shape == (3,)


def test_the_recipe_builds_partial_fc_only_when_it_shards_or_samples():
    assert type(build_training_loss("vmf", 10, 4).loss) is VMFLoss
    assert type(build_training_loss("vmf", 10, 4, params={"sample_rate": 1.0}).loss) is VMFLoss
    sampled = build_training_loss("vmf", 10, 4, params={"sample_rate": 0.5, "margin": 0.0}).loss
    assert type(sampled) is PartialFCVMFLoss and sampled.sample_rate == 0.5 and sampled.margin == 0.0
    shard = ClassShard.contiguous(10, rank=0, world_size=2)
    assert build_training_loss("vmf", 10, 4, params={"shard": shard}).loss.means.shape == (5, 4)


def test_sampled_softmax_is_the_softmax_over_the_batchs_classes_and_a_random_subset_of_the_others():
    torch.manual_seed(0)
    loss_func = PartialFCVMFLoss(20, 6, kappa=8.0, margin=0.1, sample_rate=0.3)
    loss_func.means.copy_(torch.nn.functional.normalize(torch.randn(20, 6)))
    full = VMFLoss(20, 6, kappa=8.0)
    full.means.copy_(loss_func.means)
    labels = torch.tensor([1, 1, 5, 5, 9, 9, 2, 2])
    draws = []
    for _ in range(3):
        z = torch.randn(8, 6, requires_grad=True)
        per_sample = loss_func.compute_loss(z, labels, None, z, labels)["loss"]["losses"]
        rows = loss_func.sampled_classes
        draws.append(rows.tolist())
        assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == 6  # ceil(0.3 * 20)
        assert set(labels.tolist()) <= set(rows.tolist())
        targets = torch.searchsorted(rows, labels)
        logits = full.get_logits(z)[:, rows] - torch.nn.functional.one_hot(targets, len(rows)) * (8.0 * 0.1)
        expected = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        torch.testing.assert_close(per_sample, expected)
        (grad,) = torch.autograd.grad(per_sample.sum(), z)
        (expected_grad,) = torch.autograd.grad(expected.sum(), z)
        torch.testing.assert_close(grad, expected_grad)
    assert len({tuple(d) for d in draws}) > 1, "the negatives are drawn anew at each call"
    loss_func.eval()  # predictions and evaluation: every class, as without sampling
    z = torch.randn(8, 6)
    with_margin = VMFLoss(20, 6, kappa=8.0, margin=0.1)
    with_margin.means.copy_(loss_func.means)
    torch.testing.assert_close(loss_func(z, labels), with_margin(z, labels))


def test_a_sample_rate_of_one_is_the_full_softmax_and_a_rate_outside_0_1_is_refused():
    torch.manual_seed(1)
    sampled, full = PartialFCVMFLoss(5, 4, sample_rate=1.0), VMFLoss(5, 4)
    means = torch.nn.functional.normalize(torch.randn(5, 4))
    sampled.means.copy_(means)
    full.means.copy_(means)
    z, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 4, 4])
    assert torch.equal(sampled(z, labels), full(z, labels)) and sampled.sampled_classes is None
    for rate in (0.0, -0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="sample_rate"):
            PartialFCVMFLoss(5, 4, sample_rate=rate)

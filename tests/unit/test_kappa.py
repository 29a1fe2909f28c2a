"""VMFLoss's kappa settings: the class count's scale, a number, and kappa saved with the means; the default margin."""

import math

import pytest
import torch
import torch.nn.functional as F

from pml_vmf import GlobalMeanMiner, VMFLoss
from pml_vmf.kappa import MIN_AUTO_KAPPA, class_count_kappa

NUM_CLASSES, EMBEDDING_SIZE = 10, 16


@pytest.mark.parametrize("num_classes, expected", [(10, 3.107), (500, 8.786), (1_000_000, 19.538)])
def test_auto_is_adacos_fixed_scale_of_the_class_count(num_classes, expected):
    assert VMFLoss(num_classes, 4).kappa == pytest.approx(expected, abs=1e-3)
    assert VMFLoss(num_classes, 4, kappa="auto").kappa == pytest.approx(math.sqrt(2) * math.log(num_classes - 1))


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_auto_is_floored_for_a_handful_of_classes(num_classes):
    assert class_count_kappa(num_classes) == MIN_AUTO_KAPPA  # sqrt(2) ln(C - 1) is 0, 0.98, 1.55 here


def test_auto_of_a_shard_uses_every_class():
    from pml_vmf import PartialFCVMFLoss
    from pml_vmf.sharding import ClassShard

    shard = ClassShard.contiguous(500, rank=0, world_size=2)
    assert PartialFCVMFLoss(500, 4, shard=shard).kappa == pytest.approx(class_count_kappa(500))


@pytest.mark.parametrize("bad", ["adaptive", -1.0, 0.0, float("nan"), float("inf"), None, True])
def test_a_bad_kappa_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="kappa must be"):
        VMFLoss(NUM_CLASSES, 4, kappa=bad)


@pytest.mark.parametrize("kappa", [8.0, "auto"])
def test_kappa_travels_in_the_state_dict(kappa):
    source = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=kappa)
    source.kappa = 5.5
    assert source.state_dict()["kappa_value"].item() == 5.5
    target = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=kappa)
    target.load_state_dict(source.state_dict())
    assert target.kappa == 5.5


def test_a_state_dict_without_kappa_keeps_the_constructor_value():
    source = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=8.0)
    old = {k: v for k, v in source.state_dict().items() if k != "kappa_value"}
    target = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=12.0)
    target.load_state_dict(old)
    assert target.kappa == 12.0


def test_a_learned_kappa_is_its_parameter_in_the_state_dict():
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa="auto", learn_kappa=True)
    assert loss.kappa == pytest.approx(class_count_kappa(NUM_CLASSES))
    assert "log_kappa" in loss.state_dict() and "kappa_value" not in loss.state_dict()


def test_setting_kappa_to_a_mode_after_construction_is_refused():
    with pytest.raises(ValueError, match="Set kappa to a number"):
        VMFLoss(NUM_CLASSES, 4).kappa = "auto"


def _batch(device, n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE, generator=generator), dim=1)
    labels = torch.arange(n) % NUM_CLASSES
    embeddings = means[labels] + 0.6 * torch.randn(n, EMBEDDING_SIZE, generator=generator)
    return means.to(device), embeddings.to(device), labels.to(device)


def test_half_keeps_the_means_and_kappa_in_float32(device):
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    miner = GlobalMeanMiner(loss)
    loss.half()
    miner.half()
    assert loss.means.dtype == torch.float32 and loss.kappa_value.dtype == torch.float32
    assert miner.class_sums.dtype == torch.float32
    loss.to(torch.float64)
    assert loss.means.dtype == torch.float32


def test_an_empty_batch_is_a_zero_loss_that_backpropagates(device):
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    miner = GlobalMeanMiner(loss)
    embeddings = torch.zeros(0, EMBEDDING_SIZE, device=device, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long, device=device)
    for value in (loss(embeddings, labels), loss(embeddings, labels, miner(embeddings, labels))):
        assert value.item() == 0.0
        value.backward()


def test_a_nan_row_the_miner_drops_leaves_loss_and_gradients_finite(device):
    means, embeddings, labels = _batch(device, n=20)
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    loss.means.copy_(means)
    miner = GlobalMeanMiner(loss)
    embeddings[3] = float("nan")
    x = embeddings.clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="skipped 1 of 20"):
        value = loss(x, labels, miner(x, labels))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all() and x.grad[3].abs().sum() == 0


def test_the_default_margin_is_the_cosine_margin_and_zero_is_the_papers_loss(device):
    means, embeddings, labels = _batch(device)
    default = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    paper = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, margin=0).to(device)
    default.means.copy_(means)
    paper.means.copy_(means)
    cosines = F.normalize(embeddings, dim=1) @ means.T
    kappa = class_count_kappa(NUM_CLASSES)
    assert default.margin == 0.1
    assert default(embeddings, labels).item() == pytest.approx(
        F.cross_entropy(kappa * (cosines - 0.1 * F.one_hot(labels, NUM_CLASSES)), labels).item(), rel=1e-5
    )
    assert paper(embeddings, labels).item() == pytest.approx(F.cross_entropy(kappa * cosines, labels).item(), rel=1e-5)

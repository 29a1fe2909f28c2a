"""GlobalMeanMiner against a numpy reference: sums, updates, momentum, seeding, non-finite input and resuming."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from pml_vmf import GlobalMeanMiner, VMFLoss

NUM_CLASSES, EMBEDDING_SIZE = 6, 8


def _batches(device, num_batches=5, batch_size=10, seed=0):
    """Batches in which class 5 never appears and class 4 only in the first batch."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for index in range(num_batches):
        labels = torch.randint(0, 4, (batch_size,), generator=generator)
        if index == 0:
            labels[:2] = 4
        embeddings = torch.randn(batch_size, EMBEDDING_SIZE, generator=generator) * 3
        batches.append((embeddings.to(device), labels.to(device)))
    return batches


def _numpy_means(batches, num_classes=NUM_CLASSES):
    sums = np.zeros((num_classes, EMBEDDING_SIZE))
    counts = np.zeros(num_classes, dtype=int)
    for embeddings, labels in batches:
        e = embeddings.cpu().double().numpy()
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        for row, label in zip(e, labels.cpu().numpy()):
            sums[label] += row
            counts[label] += 1
    norms = np.linalg.norm(sums, axis=1)
    means = np.divide(sums, norms[:, None], out=np.zeros_like(sums), where=norms[:, None] > 0)
    return means, counts, norms


def _fresh(device, **miner_kwargs):
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=16.0).to(device)
    return loss, GlobalMeanMiner(loss, **miner_kwargs).to(device)


def test_update_equals_numpy_reference_and_keeps_means_of_absent_classes(device):
    loss, miner = _fresh(device)
    first, rest = _batches(device)[:1], _batches(device)[1:]
    for embeddings, labels in first:
        miner(embeddings, labels)
    miner.update_means()
    mean_of_class_4 = loss.means[4].clone()
    for embeddings, labels in rest:
        miner(embeddings, labels)
    estimate = miner.update_means()

    expected, counts, norms = _numpy_means(rest)
    np.testing.assert_allclose(loss.means[:4].cpu().numpy(), expected[:4], rtol=1e-5, atol=1e-6)
    assert torch.equal(loss.means[4], mean_of_class_4), "class 4 had no sample: its previous mean must stay"
    assert torch.equal(loss.means[5].cpu(), torch.zeros(EMBEDDING_SIZE)), "class 5 was never seen"
    np.testing.assert_array_equal(estimate.counts.cpu().numpy(), counts)
    np.testing.assert_allclose(estimate.resultant_lengths[:4].cpu().numpy(), norms[:4] / counts[:4], rtol=1e-6)
    r = norms[:4] / counts[:4]
    np.testing.assert_allclose(
        estimate.concentrations[:4].cpu().numpy(), r * (EMBEDDING_SIZE - r**2) / (1 - r**2), rtol=1e-5
    )
    assert torch.isnan(estimate.resultant_lengths[4:]).all() and torch.isnan(estimate.concentrations[4:]).all()
    assert torch.equal(estimate.means, loss.means)
    assert miner.class_counts.sum() == 0 and miner.class_sums.abs().sum() == 0, "update must reset the sums"


def test_momentum_update_equals_reference(device):
    loss, miner = _fresh(device, momentum=0.75)
    batches = _batches(device)
    for embeddings, labels in batches[:2]:
        miner(embeddings, labels)
    miner.update_means()
    old = loss.means.cpu().double().numpy()
    for embeddings, labels in batches[2:]:
        miner(embeddings, labels)
    miner.update_means()
    new, _, _ = _numpy_means(batches[2:])
    blend = 0.75 * old[:4] + 0.25 * new[:4]
    expected = blend / np.linalg.norm(blend, axis=1, keepdims=True)
    np.testing.assert_allclose(loss.means[:4].cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_update_every_publishes_automatically(device):
    loss, miner = _fresh(device, update_every=2, seed_missing_means=False)
    batches = _batches(device)
    miner(*batches[0])
    assert loss.means.abs().sum() == 0 and miner.calls_since_update == 1
    miner(*batches[1])
    expected, _, _ = _numpy_means(batches[:2])
    np.testing.assert_allclose(loss.means.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert miner.calls_since_update == 0


def test_returned_tuple_weighs_every_sample_equally(device):
    loss, miner = _fresh(device)
    embeddings, labels = _batches(device)[0]
    indices_tuple = miner(embeddings, labels)
    assert len(indices_tuple) == 4 and miner.num_pos_pairs == len(labels) and miner.num_neg_pairs == 0
    weights = lmu.convert_to_weights(indices_tuple, labels, dtype=torch.float32)
    assert torch.equal(weights, torch.ones_like(weights))
    torch.testing.assert_close(loss(embeddings, labels, indices_tuple), loss(embeddings, labels))


def test_missing_means_are_seeded_from_the_batch_without_overwriting_existing_ones(device):
    loss, miner = _fresh(device)
    user_mean = F.normalize(torch.randn(EMBEDDING_SIZE, device=device), dim=0)
    loss.means[0] = user_mean
    embeddings, labels = _batches(device)[0]
    miner(embeddings, labels)
    expected, _, _ = _numpy_means([(embeddings, labels)])
    present = sorted(set(labels.tolist()) - {0})
    np.testing.assert_allclose(loss.means[present].cpu().numpy(), expected[present], rtol=1e-5, atol=1e-6)
    assert torch.equal(loss.means[0], user_mean)
    assert torch.equal(loss.means[5].cpu(), torch.zeros(EMBEDDING_SIZE))


def test_non_finite_embeddings_are_skipped_loudly_and_means_stay_finite(device):
    loss, miner = _fresh(device)
    embeddings, labels = _batches(device)[0]
    poisoned = embeddings.clone()
    poisoned[0, 0] = float("nan")
    poisoned[3, 1] = float("inf")
    with pytest.warns(RuntimeWarning, match="skipped 2 of 10 embeddings with NaN or inf"):
        indices_tuple = miner(poisoned, labels)
    assert 0 not in indices_tuple[0].tolist() and 3 not in indices_tuple[0].tolist()
    assert miner.num_skipped_non_finite == 2
    with pytest.warns(RuntimeWarning):
        miner(torch.full_like(embeddings, float("nan")), labels)
    miner.update_means()
    assert torch.isfinite(loss.means).all()
    keep = torch.tensor([i not in (0, 3) for i in range(len(labels))], device=device)
    expected, _, _ = _numpy_means([(embeddings[keep], labels[keep])])
    np.testing.assert_allclose(loss.means.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("update_every", [None, 3])
def test_resume_mid_epoch_gives_the_same_means(tmp_path, update_every, device):
    batches = _batches(device, num_batches=7)
    loss, miner = _fresh(device, update_every=update_every, momentum=0.5)
    for batch in batches:
        miner(*batch)
    uninterrupted = miner.update_means().means

    loss, miner = _fresh(device, update_every=update_every, momentum=0.5)
    for batch in batches[:4]:
        miner(*batch)
    torch.save({"loss": loss.state_dict(), "miner": miner.state_dict()}, tmp_path / "checkpoint.pt")
    del loss, miner
    state = torch.load(tmp_path / "checkpoint.pt")
    loss, miner = _fresh(device, update_every=update_every, momentum=0.5)
    loss.load_state_dict(state["loss"])
    miner.load_state_dict(state["miner"])
    for batch in batches[4:]:
        miner(*batch)
    assert torch.equal(miner.update_means().means, uninterrupted)


def test_the_last_updates_diagnostics_survive_a_checkpoint(tmp_path, device):
    """A resumed run logs the vmf/* diagnostics of the last mean update, as the run that was never stopped does."""
    loss, miner = _fresh(device, update_every=3)
    for batch in _batches(device, num_batches=4):  # an update after the third call, none after the fourth
        miner(*batch)
    assert miner.diagnostics() and set(miner.diagnostics()) >= {"vmf/resultant_length_mean", "vmf/concentration_max"}
    torch.save(miner.state_dict(), tmp_path / "miner.pt")
    _, restored = _fresh(device, update_every=3)
    assert restored.diagnostics() == {}
    restored.load_state_dict(torch.load(tmp_path / "miner.pt", weights_only=True))
    assert restored.diagnostics() == pytest.approx(miner.diagnostics())


def test_miner_follows_the_embeddings_device(device):
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    miner = GlobalMeanMiner(loss)
    embeddings, labels = _batches(device)[0]
    miner(embeddings, labels)
    assert miner.class_sums.device.type == device.type and loss.means.device.type == device.type
    assert miner.class_sums.dtype == torch.float32


def test_miner_state_dict_holds_sums_not_the_loss():
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    miner = GlobalMeanMiner(loss)
    assert set(miner.state_dict()) == {"class_sums", "class_counts", "_extra_state"}
    assert list(miner.children()) == [miner.distance]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"update_every": 0}, "update_every must be a positive integer"),
        ({"update_every": 2.5}, "update_every must be a positive integer"),
        ({"momentum": 1.0}, r"momentum must lie in \[0, 1\)"),
        ({"momentum": -0.1}, r"momentum must lie in \[0, 1\)"),
    ],
)
def test_bad_miner_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GlobalMeanMiner(VMFLoss(NUM_CLASSES, EMBEDDING_SIZE), **kwargs)


def test_miner_needs_a_vmf_loss():
    from pytorch_metric_learning.losses import NormalizedSoftmaxLoss

    with pytest.raises(ValueError, match="needs the VMFLoss"):
        GlobalMeanMiner(NormalizedSoftmaxLoss(NUM_CLASSES, EMBEDDING_SIZE))


@pytest.mark.parametrize(
    "embeddings, labels, message",
    [
        (torch.randn(3, EMBEDDING_SIZE), torch.tensor([0, 1, NUM_CLASSES]), r"labels must lie in \[0, 5\]"),
        (torch.randn(3, EMBEDDING_SIZE), torch.tensor([0.0, 1.0, 2.0]), "integer"),
        (torch.randn(3, EMBEDDING_SIZE - 1), torch.tensor([0, 1, 2]), "width 7"),
    ],
)
def test_bad_batch_to_miner_is_a_value_error(embeddings, labels, message):
    loss, miner = _fresh(torch.device("cpu"))
    with pytest.raises(ValueError, match=message):
        miner(embeddings, labels)
    assert miner.class_counts.sum() == 0 and loss.means.abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_labels_of_any_integer_dtype_give_the_same_means_and_loss_as_int64(dtype, device):
    """int32 labels from numpy (or uint8) work as in PML's own losses; index_add_ used to reject them."""
    results = []
    for label_dtype in (torch.long, dtype):
        loss_func = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=8.0).to(device)
        miner = GlobalMeanMiner(loss_func, update_every=2)
        values = []
        for embeddings, labels in _batches(device):
            labels = labels.to(label_dtype)
            values.append(loss_func(embeddings, labels, miner(embeddings, labels)))
        results.append((torch.stack(values), loss_func.means.clone(), loss_func.predict(embeddings)))
    torch.testing.assert_close(results[1][0], results[0][0], atol=0, rtol=0)
    torch.testing.assert_close(results[1][1], results[0][1], atol=0, rtol=0)
    assert torch.equal(results[1][2], results[0][2])


def test_int32_labels_from_numpy_in_a_full_pass(device):
    from pml_vmf import compute_class_means

    model = torch.nn.Linear(EMBEDDING_SIZE, EMBEDDING_SIZE).to(device)
    (embeddings, labels), *_ = _batches(device)
    int32_labels = torch.from_numpy(labels.cpu().numpy().astype(np.int32)).to(device)
    found = compute_class_means(model, [(embeddings, int32_labels)], NUM_CLASSES)
    expected = compute_class_means(model, [(embeddings, labels)], NUM_CLASSES)
    torch.testing.assert_close(found.means, expected.means, atol=0, rtol=0)


def test_states_of_several_processes_combine_into_one_that_publishes_the_same_means(device):
    """Resuming on another number of processes: the first process takes every process's sums, the others none."""
    batches = _batches(device)
    halves = []
    for part in (batches[:2], batches[2:]):
        loss_func = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
        miner = GlobalMeanMiner(loss_func, update_every=None, seed_missing_means=False)
        for embeddings, labels in part:
            miner(embeddings, labels)
        halves.append({k: v.cpu() if torch.is_tensor(v) else v for k, v in miner.state_dict().items()})
    first = GlobalMeanMiner(VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device), update_every=None)
    first.load_state_dict(GlobalMeanMiner.combine_process_states(halves, is_first=True))
    other = GlobalMeanMiner(VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device), update_every=None)
    other.load_state_dict(GlobalMeanMiner.combine_process_states(halves, is_first=False))
    assert other.class_counts.sum() == 0 and other.class_sums.abs().sum() == 0
    expected, counts, _ = _numpy_means(batches)
    estimate = first.update_means()
    np.testing.assert_allclose(estimate.means.cpu().numpy(), expected, atol=1e-6)
    assert estimate.counts.cpu().tolist() == counts.tolist()

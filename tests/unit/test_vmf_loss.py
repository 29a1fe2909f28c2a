"""VMFLoss against PML's NormalizedSoftmaxLoss, autograd, reducers, mixed precision and bad input."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, reducers, regularizers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from pml_vmf import VMFLoss

NUM_CLASSES, EMBEDDING_SIZE, BATCH = 7, 16, 24


def _normalized_softmax_twin(kappa: float, dtype: torch.dtype, device: torch.device, **kwargs):
    """A NormalizedSoftmaxLoss and a VMFLoss whose means are the normalised columns of its W.

    The means buffer is float32 by contract, so W is taken float32-representable for the float64 comparison.
    """
    reference = losses.NormalizedSoftmaxLoss(NUM_CLASSES, EMBEDDING_SIZE, temperature=1 / kappa, **kwargs).to(device)
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=kappa, margin=0.0, **kwargs).to(device)  # the paper's loss
    vmf.means.copy_(F.normalize(reference.W.detach(), dim=0).t())
    reference.W.data = vmf.means.t().to(dtype)
    return reference, vmf


def _batch(dtype: torch.dtype, device: torch.device):
    embeddings = torch.randn(BATCH, EMBEDDING_SIZE, dtype=dtype, device=device)
    labels = torch.arange(BATCH, device=device) % NUM_CLASSES
    return embeddings, labels


def _loss_and_grad(loss_func, embeddings, labels, indices_tuple=None):
    x = embeddings.clone().requires_grad_(True)
    loss = loss_func(x, labels, indices_tuple)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kappa", [1.0, 16.0, 64.0])
def test_equals_normalized_softmax_loss(dtype, kappa, device):
    reference, vmf = _normalized_softmax_twin(kappa, dtype, device)
    embeddings, labels = _batch(dtype, device)
    expected_loss, expected_grad = _loss_and_grad(reference, embeddings, labels)
    loss, grad = _loss_and_grad(vmf, embeddings, labels)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(loss, expected_loss.to(loss.dtype), **tol)
    torch.testing.assert_close(grad, expected_grad, **tol)


@pytest.mark.parametrize(
    "reducer",
    [
        reducers.MeanReducer(),
        reducers.SumReducer(),
        reducers.AvgNonZeroReducer(),
        reducers.ThresholdReducer(low=1.0),
        reducers.ClassWeightedReducer(torch.linspace(0.5, 2.0, NUM_CLASSES)),
        reducers.PerAnchorReducer(),
    ],
    ids=lambda r: type(r).__name__,
)
def test_equals_normalized_softmax_loss_with_any_reducer_and_miner_output(reducer, device):
    reference, vmf = _normalized_softmax_twin(16.0, torch.float64, device, reducer=reducer)
    embeddings, labels = _batch(torch.float64, device)
    # Uneven per-sample weights, as a PML pair miner would hand over.
    a1, p, a2, n = lmu.get_all_pairs_indices(labels)
    indices_tuple = (a1[::3], p[::3], a2[::5], n[::5])
    expected_loss, expected_grad = _loss_and_grad(reference, embeddings, labels, indices_tuple)
    loss, grad = _loss_and_grad(vmf, embeddings, labels, indices_tuple)
    torch.testing.assert_close(loss, expected_loss.to(loss.dtype))
    torch.testing.assert_close(grad, expected_grad)


def test_matches_hand_written_cross_entropy(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=10.0, margin=0.0).to(device)
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE, device=device), dim=1))
    embeddings, labels = _batch(torch.float32, device)
    logits = 10.0 * F.normalize(embeddings, dim=1) @ vmf.means.t()
    torch.testing.assert_close(vmf.get_logits(embeddings), logits)
    torch.testing.assert_close(vmf(embeddings, labels), F.cross_entropy(logits, labels))
    assert torch.equal(vmf.predict(embeddings), logits.argmax(dim=1))


def test_gradcheck_and_means_get_no_gradient(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=8.0, margin=0.0).to(device)
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE, device=device), dim=1))
    means_before = vmf.means.clone()
    embeddings, labels = _batch(torch.float64, device)
    x = embeddings.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: vmf(e, labels), (x,))
    vmf(x, labels).backward()
    assert not vmf.means.requires_grad and vmf.means.grad is None
    assert list(vmf.parameters()) == []
    assert torch.equal(vmf.means, means_before)


def test_means_buffer_is_persistent_float32_and_follows_device(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    assert vmf.means.dtype == torch.float32 and vmf.means.shape == (NUM_CLASSES, EMBEDDING_SIZE)
    assert "means" in vmf.state_dict()
    assert vmf.to(device).means.device.type == device.type
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE), dim=1))
    restored = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    restored.load_state_dict(vmf.state_dict())
    assert torch.equal(restored.means.cpu(), vmf.means.cpu())


def test_class_without_mean_is_left_out_of_the_softmax(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=16.0, margin=0.0).to(device)
    vmf.means[:3] = F.normalize(torch.randn(3, EMBEDDING_SIZE, device=device), dim=1)
    embeddings = torch.randn(5, EMBEDDING_SIZE, device=device)
    labels = torch.tensor([0, 1, 2, 0, 1], device=device)
    logits = vmf.get_logits(embeddings)
    assert torch.isneginf(logits[:, 3:]).all() and torch.isfinite(logits[:, :3]).all()
    expected = F.cross_entropy(logits[:, :3], labels)
    torch.testing.assert_close(vmf(embeddings, labels), expected)
    assert vmf.predict(embeddings).max() < 3


def test_target_class_without_mean_is_an_error(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    embeddings, labels = _batch(torch.float32, device)
    with pytest.raises(ValueError, match=r"no mean direction yet for class\(es\) \[0, 1, 2"):
        vmf(embeddings, labels)
    with pytest.raises(ValueError, match="no class has a mean yet"):
        vmf.predict(embeddings)


def test_a_nan_embedding_that_was_its_class_only_sample_is_reported_as_nan(device):
    from pml_vmf import GlobalMeanMiner

    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    miner = GlobalMeanMiner(vmf)
    embeddings = torch.randn(4, EMBEDDING_SIZE, device=device)
    embeddings[3] = float("nan")  # class 3's only sample: the miner cannot give it a mean
    labels = torch.tensor([0, 1, 2, 3], device=device)
    with (
        pytest.warns(RuntimeWarning, match="skipped 1 of 4 embeddings with NaN"),
        pytest.raises(ValueError, match=r"embeddings of class\(es\) \[3\] are NaN or inf.*diverged"),
    ):
        vmf(embeddings, labels, miner(embeddings, labels))


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kappa", [1.0, 16.0, 128.0])
def test_autocast_gives_float32_logits_and_finite_loss_and_gradients(amp_dtype, kappa, device):
    model = torch.nn.Linear(EMBEDDING_SIZE, EMBEDDING_SIZE).to(device)
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=kappa).to(device)
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE, device=device), dim=1))
    inputs, labels = _batch(torch.float32, device)
    with torch.autocast(device_type=device.type, dtype=amp_dtype):
        embeddings = model(inputs * 100)  # large activations: the regime where fp16 logits would overflow
        assert embeddings.dtype == amp_dtype
        logits = vmf.get_logits(embeddings)
        loss = vmf(embeddings, labels)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert vmf.means.dtype == torch.float32


@pytest.mark.parametrize("kappa", [1.0, 2.0, 8.0, 32.0, 128.0])
def test_finite_for_any_kappa_even_at_large_margins(kappa, device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=kappa).to(device)
    vmf.means.copy_(torch.eye(NUM_CLASSES, EMBEDDING_SIZE, device=device))
    labels = torch.arange(NUM_CLASSES, device=device)
    far_from_target = -torch.eye(NUM_CLASSES, EMBEDDING_SIZE, device=device) * 1e4  # cos = -1 to its own mean
    x = far_from_target.requires_grad_(True)
    loss = vmf(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_works_with_embedding_regularizer(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, embedding_regularizer=regularizers.LpRegularizer()).to(device)
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE, device=device), dim=1))
    embeddings, labels = _batch(torch.float32, device)
    plain = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    plain.means.copy_(vmf.means)
    assert vmf(embeddings, labels) > plain(embeddings, labels)


@pytest.fixture
def ready_loss(device):
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).to(device)
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE, device=device), dim=1))
    return vmf


@pytest.mark.parametrize(
    "make_input, message",
    [
        (
            lambda d: (torch.randn(4, EMBEDDING_SIZE, device=d), torch.tensor([0, 1, 7, 2], device=d)),
            r"\[0, 6\].*\[0, 7\]",
        ),
        (lambda d: (torch.randn(4, EMBEDDING_SIZE, device=d), torch.tensor([0, -1, 3, 2], device=d)), r"\[-1, 3\]"),
        (lambda d: (torch.randn(4, EMBEDDING_SIZE, device=d), torch.tensor([0.0, 1.0, 2.0, 3.0], device=d)), "integer"),
        (lambda d: (torch.randn(4, EMBEDDING_SIZE + 1, device=d), torch.tensor([0, 1, 2, 3], device=d)), "width 17"),
        (lambda d: (torch.randn(4, 2, EMBEDDING_SIZE, device=d), torch.tensor([0, 1, 2, 3], device=d)), "2D tensor"),
        (lambda d: (torch.randn(4, EMBEDDING_SIZE, device=d), torch.tensor([0, 1, 2], device=d)), "equal number"),
    ],
    ids=["label-too-large", "label-negative", "float-labels", "wrong-width", "wrong-rank", "length-mismatch"],
)
def test_bad_batch_is_a_value_error(ready_loss, make_input, message, device):
    embeddings, labels = make_input(device)
    with pytest.raises(ValueError, match=message):
        ready_loss(embeddings, labels)


def test_ref_emb_is_rejected(ready_loss, device):
    embeddings, labels = _batch(torch.float32, device)
    with pytest.raises(ValueError, match="ref_emb is not supported"):
        ready_loss(embeddings, labels, ref_emb=embeddings.clone(), ref_labels=labels)


@pytest.mark.parametrize("kappa", [0, -1.0, float("nan"), float("inf"), "big"])
def test_bad_kappa_is_a_value_error(kappa):
    with pytest.raises(ValueError, match="kappa"):
        VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, kappa=kappa)
    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    with pytest.raises(ValueError, match="kappa"):
        vmf.kappa = kappa


@pytest.mark.parametrize("num_classes", [1, 0, 2.5])
def test_too_few_classes_is_a_value_error(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        VMFLoss(num_classes, EMBEDDING_SIZE)


@pytest.mark.parametrize(
    "distance",
    [
        distances.LpDistance(),
        distances.DotProductSimilarity(normalize_embeddings=False),
        distances.CosineSimilarity(power=2),
        distances.SNRDistance(),
    ],
    ids=lambda d: type(d).__name__,
)
def test_non_cosine_distance_is_a_value_error(distance):
    with pytest.raises(ValueError, match="needs a cosine similarity"):
        VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, distance=distance)


def test_cosine_distances_are_accepted_and_give_the_default_loss():
    torch.manual_seed(0)
    means = F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE), dim=1)
    embeddings, labels = _batch(torch.float32, torch.device("cpu"))
    values = []
    for extra in ({}, {"distance": distances.CosineSimilarity()}, {"distance": distances.DotProductSimilarity()}):
        loss_func = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, **extra)
        loss_func.means.copy_(means)
        values.append(loss_func(embeddings, labels))
    assert isinstance(VMFLoss(NUM_CLASSES, EMBEDDING_SIZE).distance, distances.CosineSimilarity)
    torch.testing.assert_close(values[1], values[0])
    torch.testing.assert_close(values[2], values[0])  # a dot product of normalised embeddings is the cosine


def test_warns_once_when_nothing_updates_the_means():
    """A user who swapped in VMFLoss but kept the old miner trains against means that never move."""
    from pytorch_metric_learning.miners import TripletMarginMiner

    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    vmf.means.copy_(F.normalize(torch.randn(NUM_CLASSES, EMBEDDING_SIZE), dim=1))
    old_miner = TripletMarginMiner()
    embeddings, labels = _batch(torch.float32, torch.device("cpu"))
    indices = old_miner(embeddings, labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(VMFLoss.STALE_MEANS_WARNING_STEPS):
            vmf(embeddings, labels, indices)
        assert caught == []  # the first call sees the means, 999 more see them unchanged
        for _ in range(VMFLoss.STALE_MEANS_WARNING_STEPS + 10):
            vmf(embeddings, labels, indices)
    assert len(caught) == 1 and "GlobalMeanMiner" in str(caught[0].message)


def test_no_stale_means_warning_while_the_miner_updates_them(recwarn):
    from pml_vmf import GlobalMeanMiner

    vmf = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    miner = GlobalMeanMiner(vmf, update_every=60)
    assert vmf.stale_means_warning_steps == 1200  # 20 x update_every: the means change every 60 calls
    embeddings, labels = _batch(torch.float32, torch.device("cpu"))
    for _ in range(1300):
        vmf(embeddings, labels, miner(embeddings, labels))
    assert not [w for w in recwarn if "never changed" in str(w.message)]
    assert (
        GlobalMeanMiner(VMFLoss(NUM_CLASSES, EMBEDDING_SIZE), update_every=None).loss.stale_means_warning_steps is None
    )

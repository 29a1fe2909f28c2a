"""compute_class_means (the full pass) and the concentration estimate, in one process."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import compute_class_means, estimate_concentration

NUM_CLASSES = 5


def _data(num_samples=53, width=6):
    inputs = torch.randn(num_samples, width)
    labels = torch.arange(num_samples) % (NUM_CLASSES - 1)  # the last class has no sample
    return inputs, labels


def test_full_pass_equals_reference_and_restores_train_mode():
    inputs, labels = _data()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.5))
    model.train()
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=8, shuffle=True)
    estimate = compute_class_means(model, loader, NUM_CLASSES)
    assert model.training

    with torch.no_grad():
        units = torch.nn.functional.normalize(model[0](inputs), dim=1).double().numpy()  # eval mode: no dropout
    for c in range(NUM_CLASSES - 1):
        total = units[labels.numpy() == c].sum(axis=0)
        np.testing.assert_allclose(estimate.means[c].numpy(), total / np.linalg.norm(total), rtol=1e-5, atol=1e-6)
        assert estimate.counts[c] == (labels == c).sum()
    assert torch.equal(estimate.means[-1], torch.zeros(8)) and estimate.counts[-1] == 0
    assert estimate.means.dtype == torch.float32


def test_full_pass_rejects_bad_labels_and_empty_loaders():
    inputs, labels = _data()
    model = torch.nn.Linear(6, 8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        compute_class_means(model, DataLoader(TensorDataset(inputs, labels), batch_size=8), 3)
    with pytest.raises(ValueError, match="empty dataloader"):
        compute_class_means(model, [], NUM_CLASSES)


def test_full_pass_skips_non_finite_embeddings():
    inputs, labels = _data()
    inputs[0] = float("nan")
    with pytest.warns(RuntimeWarning, match="skipped 1 of"):
        estimate = compute_class_means(
            torch.nn.Linear(6, 8), DataLoader(TensorDataset(inputs, labels), batch_size=8), NUM_CLASSES
        )
    assert torch.isfinite(estimate.means).all() and estimate.counts.sum() == len(labels) - 1


def test_concentration_estimate():
    r = torch.tensor([0.0, 0.5, 0.9, 1.0], dtype=torch.float64)
    expected = [0.0, 0.5 * (16 - 0.25) / 0.75, 0.9 * (16 - 0.81) / (1 - 0.81), float("inf")]
    np.testing.assert_allclose(estimate_concentration(r, 16).numpy(), expected, rtol=1e-12)
    # A tight cluster on the sphere gives a large estimate, a uniform spread a small one.
    tight = torch.nn.functional.normalize(torch.randn(1, 32) + 0.05 * torch.randn(500, 32), dim=1)
    spread = torch.nn.functional.normalize(torch.randn(500, 32), dim=1)
    r_tight = tight.sum(0).norm() / 500
    r_spread = spread.sum(0).norm() / 500
    assert estimate_concentration(r_tight, 32) > 100 > 10 > estimate_concentration(r_spread, 32)


def test_estimate_summary_leaves_out_classes_without_samples_and_infinite_concentrations():
    from pml_vmf import estimate_class_means

    sums = torch.tensor([[2.0, 0.0], [0.6, 0.8], [0.0, 0.0]])  # class 0: two identical samples; class 2: none
    estimate = estimate_class_means(sums, torch.tensor([2, 2, 0]))
    summary = estimate.summary()
    assert summary["vmf/resultant_length_min"] == pytest.approx(0.5) and summary[
        "vmf/resultant_length_max"
    ] == pytest.approx(1.0)
    assert summary["vmf/resultant_length_mean"] == pytest.approx(0.75)
    r = 0.5
    assert (
        summary["vmf/concentration_mean"]
        == summary["vmf/concentration_max"]
        == pytest.approx(r * (2 - r**2) / (1 - r**2))
    )


def test_full_pass_under_distributed_without_a_sharding_rule_is_an_error(monkeypatch):
    import pml_vmf.class_means as class_means

    monkeypatch.setattr(class_means, "is_distributed", lambda: True)
    loader = DataLoader(TensorDataset(torch.randn(4, 5), torch.tensor([0, 1, 2, 3])), batch_size=2)
    with pytest.raises(ValueError, match="gather=accelerator.gather_for_metrics"):
        compute_class_means(torch.nn.Linear(5, 12), loader, 9)

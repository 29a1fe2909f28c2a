"""The arithmetic of VMFLoss's options and the recipe's: learned kappa, cosine margin, EMA of the means, the head."""

import math

import pytest
import torch
import torch.nn.functional as F

from pml_vmf import VMFLoss
from pml_vmf.class_means import ema_update_means
from pml_vmf.models import create_embedding_model


def _loss_with_means(**kwargs) -> "tuple[VMFLoss, torch.Tensor, torch.Tensor]":
    torch.manual_seed(0)
    loss = VMFLoss(num_classes=5, embedding_size=6, kappa=8.0, **kwargs)
    loss.means.copy_(torch.randn(5, 6))
    embeddings, labels = torch.randn(12, 6, requires_grad=True), torch.arange(5).repeat(3)[:12]
    return loss, embeddings, labels


def _cosines(loss: VMFLoss, embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings, dim=1) @ F.normalize(loss.means, dim=1).T


def test_learned_kappa_gradient_matches_the_closed_form():
    """d/dkappa mean_i CE = mean_i (E_p[cos_i] - cos_iy), and d/dlog kappa = kappa * that."""
    loss, embeddings, labels = _loss_with_means(learn_kappa=True, margin=0.0)
    value = loss(embeddings, labels)
    value.backward()
    cos = _cosines(loss, embeddings).detach()
    probabilities = torch.softmax(8.0 * cos, dim=1)
    closed_form = ((probabilities * cos).sum(1) - cos[torch.arange(12), labels]).mean() * 8.0
    torch.testing.assert_close(loss.log_kappa.grad, closed_form, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(value, F.cross_entropy(8.0 * cos, labels), atol=1e-6, rtol=1e-6)


def test_learned_kappa_starts_at_kappa_stays_positive_and_is_a_parameter():
    loss = VMFLoss(num_classes=3, embedding_size=4, kappa=16.0, learn_kappa=True)
    assert loss.kappa == pytest.approx(16.0) and [n for n, _ in loss.named_parameters()] == ["log_kappa"]
    loss.kappa = 4.0
    assert loss.log_kappa.item() == pytest.approx(math.log(4.0))
    with pytest.raises(ValueError, match="finite and > 0"):
        loss.kappa = -1.0
    assert list(VMFLoss(num_classes=3, embedding_size=4).parameters()) == []  # fixed kappa: nothing to learn


def test_cosine_margin_is_subtracted_from_the_target_logit_only():
    loss, embeddings, labels = _loss_with_means(margin=0.2)
    cos = _cosines(loss, embeddings)
    expected = F.cross_entropy(8.0 * (cos - 0.2 * F.one_hot(labels, 5)), labels)
    torch.testing.assert_close(loss(embeddings, labels), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss.get_logits(embeddings), 8.0 * cos, atol=1e-5, rtol=1e-5)  # inference: no margin


def test_margin_and_learned_kappa_together_follow_the_formula():
    loss, embeddings, labels = _loss_with_means(margin=0.1, learn_kappa=True)
    loss.kappa = 12.0
    cos = _cosines(loss, embeddings)
    expected = F.cross_entropy(12.0 * (cos - 0.1 * F.one_hot(labels, 5)), labels)
    torch.testing.assert_close(loss(embeddings, labels), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("margin", [-0.1, 1.0, float("nan")])
def test_margin_outside_zero_one_is_an_error(margin):
    with pytest.raises(ValueError, match="margin must be in"):
        VMFLoss(num_classes=3, embedding_size=4, margin=margin)


def test_ema_update_moves_batch_classes_towards_their_batch_mean():
    means = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])  # class 2 has no mean yet
    embeddings = torch.tensor([[0.0, 3.0], [1.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 2, 1], dtype=torch.int32)
    ema_update_means(means, embeddings, labels, momentum=0.75)
    # class 0: 0.75 * (1, 0) + 0.25 * mean((0, 1), (1, 0)) = (0.875, 0.125), then normalised
    expected0 = torch.tensor([0.875, 0.125]) / math.hypot(0.875, 0.125)
    torch.testing.assert_close(means[0], expected0)
    torch.testing.assert_close(means[1], torch.tensor([0.0, 1.0]))  # moved towards itself
    torch.testing.assert_close(means[2], torch.zeros(2))  # no mean yet: left for the full pass or the miner
    torch.testing.assert_close(means[3], torch.tensor([1.0, 1.0]))  # not in the batch: untouched


def test_ema_momentum_outside_zero_one_is_an_error():
    with pytest.raises(ValueError, match="momentum must be in"):
        ema_update_means(torch.ones(2, 2), torch.ones(1, 2), torch.zeros(1), momentum=1.0)


def test_proxynca_pp_head_is_avgmax_pooling_then_layernorm_without_affine():
    torch.manual_seed(0)
    model = create_embedding_model("test_resnet", 8, global_pool="avgmax", feature_layernorm=True).eval()
    images = torch.randn(3, 3, 32, 32)
    features = model.backbone.forward_features(images)
    pooled = 0.5 * (features.mean(dim=(2, 3)) + features.amax(dim=(2, 3)))
    expected = model.head(F.layer_norm(pooled, pooled.shape[1:]))
    torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=1e-5)
    assert not any("feature_norm" in key for key in model.state_dict())  # no parameters: exports unchanged

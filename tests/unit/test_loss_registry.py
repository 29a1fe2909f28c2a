"""The loss registry: every loss builds with its usual miner, tuned margins move the miner's, classifiers predict."""

import pytest
import torch

from pml_vmf import VMFLoss
from pml_vmf.training import LOSSES, ConfigError, build_training_loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_builds_and_gives_a_finite_loss(name):
    training_loss = build_training_loss(name, num_classes=4, embedding_size=8)
    embeddings, labels = torch.randn(16, 8, requires_grad=True), torch.arange(4).repeat(4)
    if training_loss.is_vmf:
        training_loss.loss.means.copy_(torch.randn(4, 8))
    value = training_loss(embeddings, labels)
    value.backward()
    assert torch.isfinite(value) and embeddings.grad.abs().sum() > 0


def test_the_vmf_entry_is_vmf_loss_with_its_global_mean_miner():
    training_loss = build_training_loss("vmf", 5, 8, params={"kappa": 8.0}, miner_params={"update_every": 3})
    assert isinstance(training_loss.loss, VMFLoss) and training_loss.loss.kappa == 8.0
    assert training_loss.miner.update_every == 3 and training_loss.parameters() == []


def test_a_tuned_margin_moves_the_miners_margin_with_it():
    """Contrastive's grid 0.6/0.8/1.0 on the loss alone trained 0.8 and 1.0 identically (the miner decided)."""
    miners_by_value = {
        v: build_training_loss("contrastive", 5, 8, params={"neg_margin": v}).miner for v in (0.6, 0.8, 1.0)
    }
    assert [miners_by_value[v].neg_margin for v in (0.6, 0.8, 1.0)] == [0.4, 0.6, 0.8]  # the default gap of 0.2 kept
    assert miners_by_value[1.0].pos_margin == 0.2
    assert build_training_loss("triplet", 5, 8, params={"margin": 0.2}).miner.margin == 0.2
    explicit = build_training_loss("contrastive", 5, 8, params={"neg_margin": 0.6}, miner_params={"neg_margin": 0.5})
    assert explicit.miner.neg_margin == 0.5  # the config's own miner setting wins


def test_proxy_losses_expose_their_parameters_for_their_own_learning_rate():
    assert [p.shape for p in build_training_loss("proxy_anchor", 5, 8).parameters()] == [torch.Size([5, 8])]


def test_unknown_loss_and_unknown_loss_parameter_are_errors():
    with pytest.raises(ConfigError, match="must be one of"):
        build_training_loss("tripplet", 5, 8)
    with pytest.raises(ConfigError, match="TripletMarginLoss takes: margin"):
        build_training_loss("triplet", 5, 8, params={"kappa": 3})


def test_classification_predictions_come_from_each_loss_own_weights():
    from pml_vmf.evaluation import predict_with_loss

    embeddings = torch.randn(6, 8)
    for name in ("vmf", "softmax", "normalized_softmax", "arcface"):
        loss = build_training_loss(name, 4, 8).loss
        if name == "vmf":
            loss.means.copy_(torch.randn(4, 8))
        predictions = predict_with_loss(loss, embeddings)
        assert predictions.shape == (6,) and predictions.max() < 4, name
    proxy_loss = build_training_loss("normalized_softmax", 4, 8).loss
    logits = proxy_loss.get_logits(embeddings)  # PML's own logits: cosine to the normalised columns of W
    assert torch.equal(predict_with_loss(proxy_loss, embeddings), logits.argmax(dim=1))
    assert predict_with_loss(build_training_loss("triplet", 4, 8).loss, embeddings) is None

"""Classification with a trained metric-learning loss: the class its own weights predict, where it has them."""

from __future__ import annotations

from typing import Optional

import torch

from ..class_means import predict_nearest_mean


def has_classifier(loss: torch.nn.Module) -> bool:
    """Whether :func:`predict_with_loss` can classify with ``loss``'s own parameters."""
    weights = getattr(loss, "W", None)
    return hasattr(loss, "predict") or (isinstance(weights, torch.Tensor) and weights.dim() == 2)


@torch.no_grad()
def predict_with_loss(loss: torch.nn.Module, embeddings: torch.Tensor) -> Optional[torch.Tensor]:
    """The class the loss's own parameters predict, or None for losses without class weights (pair losses).

    * a ``predict`` method (``VMFLoss``: nearest mean direction; the softmax baseline: its linear classifier);
    * PML's proxy/classifier losses with a ``W`` of shape ``(embedding_size, num_classes)`` (NormalizedSoftmax,
      ArcFace, CosFace): the class of the nearest weight column by cosine, the rule their logits follow.
    """
    if hasattr(loss, "predict"):
        return loss.predict(embeddings).cpu()
    weights = getattr(loss, "W", None)
    if isinstance(weights, torch.Tensor) and weights.dim() == 2 and weights.shape[0] == embeddings.shape[1]:
        return predict_nearest_mean(embeddings, weights.detach().T).cpu()
    return None

"""Softmax cross-entropy with a linear classifier, the classification baseline, as a PML loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..pml_api import BaseMetricLossFunction, c_f


class SoftmaxLoss(BaseMetricLossFunction):
    """Cross-entropy of ``classifier(embeddings)``: a bias-carrying linear layer on raw (unnormalised) embeddings.

    Args:
        num_classes: number of classes.
        embedding_size: embedding width.
    """

    def __init__(self, num_classes: int, embedding_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classifier = torch.nn.Linear(embedding_size, num_classes)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> dict:
        c_f.labels_required(labels)
        losses = F.cross_entropy(self.classifier(embeddings.float()), labels, reduction="none")
        return {
            "loss": {"losses": losses, "indices": c_f.torch_arange_from_size(embeddings), "reduction_type": "element"}
        }

    @torch.no_grad()
    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings.float()).argmax(dim=1)

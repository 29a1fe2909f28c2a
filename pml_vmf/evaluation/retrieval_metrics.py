"""Retrieval metrics with PML's AccuracyCalculator, plus Recall@K for a protocol's Ks."""

from __future__ import annotations

import importlib.util
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..pml_api import AccuracyCalculator, CosineSimilarity, CustomKNN, FaissKMeans, FaissKNN


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _sklearn_kmeans(x: torch.Tensor, num_clusters: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    labels = KMeans(num_clusters, n_init=1, random_state=0).fit_predict(x.cpu().numpy())
    return torch.as_tensor(labels, device=x.device)


class RecallAtKCalculator(AccuracyCalculator):
    """PML's AccuracyCalculator with ``recall_at_<k>`` metrics: the share of queries with a same-class image among
    their k nearest references (the Recall@K of the DML literature).

    ``k`` of the neighbour search is the larger of the largest Recall K and the largest class size, so that MAP@R and
    R-precision stay exact.

    Args:
        recall_at: the Ks.
        **kwargs: AccuracyCalculator's arguments (``include``, ``knn_func``, ...). ``include`` may name
            ``recall_at_<k>`` for any k in ``recall_at``.
    """

    def __init__(self, recall_at: Sequence[int] = (1, 2, 4, 8), **kwargs) -> None:
        self.recall_at = sorted({int(k) for k in recall_at})
        for k in self.recall_at:
            setattr(self, f"calculate_recall_at_{k}", self._recall_function(k))
        kwargs.setdefault("k", "max_bin_count")
        super().__init__(**kwargs)

    def _recall_function(self, k: int):
        def calculate(knn_labels: torch.Tensor, query_labels: torch.Tensor, not_lone_query_mask: torch.Tensor, **_) -> float:
            labels, query = knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask]
            if len(query) == 0:
                return float("nan")
            hits = (labels[:, :k] == query[:, None]).any(dim=1)
            return hits.float().mean().item()

        return calculate

    def requires_knn(self) -> list:
        return super().requires_knn() + [f"recall_at_{k}" for k in self.recall_at]

    def determine_k(self, bin_counts: torch.Tensor, num_reference_embeddings: int, ref_includes_query: bool) -> int:
        exact_k = super().determine_k(bin_counts, num_reference_embeddings, ref_includes_query)
        largest = max(self.recall_at, default=1)
        return min(max(exact_k, largest), num_reference_embeddings - int(ref_includes_query))


def build_accuracy_calculator(
    recall_at: Sequence[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
    *,
    knn: str = "auto",
    knn_batch_size: int = 4096,
    device: Optional[torch.device] = None,
) -> RecallAtKCalculator:
    """The calculator the recipes evaluate with.

    Args:
        recall_at: the protocol's Recall@K values.
        metrics: PML metric names to compute besides Recall@K.
        knn: ``faiss`` (faiss-gpu on CUDA tensors where installed), ``torch`` (PML's blocked kNN: ``knn_batch_size``
            query rows at a time, so memory stays bounded at Stanford Online Products scale), or ``auto``.
        knn_batch_size: the block size of the torch search.
        device: where the metrics run; default: CUDA when available.
    """
    if knn not in ("auto", "faiss", "torch"):
        raise ValueError(f"eval.knn must be auto, faiss or torch, got {knn!r}.")
    use_faiss = faiss_available() if knn == "auto" else knn == "faiss"
    if use_faiss and not faiss_available():
        raise ValueError("eval.knn=faiss but faiss is not installed: pip install faiss-cpu (or faiss-gpu), or use eval.knn=torch.")
    # Embeddings are L2-normalised before the search: faiss's L2 ranking is then the cosine ranking.
    knn_func = FaissKNN() if use_faiss else CustomKNN(CosineSimilarity(), batch_size=knn_batch_size)
    kmeans_func = None if faiss_available() else _sklearn_kmeans
    include = tuple(metrics) + tuple(f"recall_at_{k}" for k in sorted(set(recall_at)))
    return RecallAtKCalculator(recall_at, include=include, knn_func=knn_func, kmeans_func=kmeans_func, device=device)


def retrieval_metrics(
    calculator: RecallAtKCalculator,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    reference: Optional[torch.Tensor] = None,
    reference_labels: Optional[torch.Tensor] = None,
) -> dict:
    """Metrics of ``query`` searched in ``reference`` (leave-one-out in ``query`` itself when None), by cosine.

    Returns:
        ``{metric name: float}``.
    """
    query = F.normalize(query.float(), dim=1)
    if reference is None:
        return {k: float(v) for k, v in calculator.get_accuracy(query, query_labels).items()}
    reference = F.normalize(reference.float(), dim=1)
    return {
        k: float(v)
        for k, v in calculator.get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False).items()
    }


def nearest_mean_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> float:
    """Classification accuracy of ``argmax_c mu_c . z``; classes whose mean row is zero are never predicted."""
    means = F.normalize(means.float(), dim=1)
    scores = F.normalize(embeddings.float(), dim=1) @ means.T
    scores[:, means.norm(dim=1) == 0] = -np.inf
    return (scores.argmax(dim=1) == labels).float().mean().item()

"""Retrieval metrics with PML's AccuracyCalculator, plus Recall@K for a protocol's Ks."""

from __future__ import annotations

import importlib.util
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..class_means import predict_nearest_mean
from ..pml_api import AccuracyCalculator, CosineSimilarity, CustomKNN, FaissKNN


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _sklearn_kmeans(x: torch.Tensor, num_clusters: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    labels = KMeans(num_clusters, n_init=1, random_state=0).fit_predict(x.cpu().numpy())
    return torch.as_tensor(labels, device=x.device)


class RecallAtKCalculator(AccuracyCalculator):
    """PML's AccuracyCalculator with ``recall_at_<k>`` metrics and a neighbour search in blocks of queries.

    ``recall_at_<k>`` is the share of queries with a same-class reference among their k nearest (the Recall@K of the
    DML literature). PML's own k-NN metrics (precision@1, R-precision, MAP@R, MRR) are computed by PML's functions,
    ``block_size`` queries at a time, each block's value weighted by its number of queries: the same numbers as one
    call over all queries, without the ``(num_classes x num_references)`` comparison and per-class loops PML runs on
    the whole set, so memory stays bounded at Stanford Online Products scale (60k queries, 11k classes, Recall@1000).
    Clustering metrics (NMI, AMI) run through PML unchanged. Queries whose class has no other reference are left
    out, as PML does.

    Args:
        recall_at: the Ks.
        block_size: queries per block.
        **kwargs: AccuracyCalculator's arguments (``include``, ``knn_func``, ``kmeans_func``, ``device``). ``include``
            may name ``recall_at_<k>`` for any k in ``recall_at``. Per-class averages and custom label comparisons
            are not supported.
    """

    BLOCKED_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank")

    def __init__(self, recall_at: Sequence[int] = (1, 2, 4, 8), block_size: int = 4096, **kwargs) -> None:
        for unsupported in ("avg_of_avgs", "return_per_class", "label_comparison_fn"):
            if kwargs.get(unsupported):
                raise NotImplementedError(f"RecallAtKCalculator does not support {unsupported}; use PML's AccuracyCalculator.")
        self.recall_at = sorted({int(k) for k in recall_at})
        self.block_size = block_size
        for k in self.recall_at:
            # Registered like PML's own metrics, so that include/exclude accept them; computed in get_accuracy.
            setattr(self, f"calculate_recall_at_{k}", lambda **_: float("nan"))
        super().__init__(**kwargs)
        unsupported_metrics = set(self.get_curr_metrics()) - set(self.BLOCKED_METRICS) - set(self.requires_clustering())
        unsupported_metrics -= {f"recall_at_{k}" for k in self.recall_at}
        if unsupported_metrics:
            raise ValueError(
                f"RecallAtKCalculator computes {', '.join(self.BLOCKED_METRICS + tuple(self.requires_clustering()))} and "
                f"recall_at_<k>; pass include= without {', '.join(sorted(unsupported_metrics))}."
            )

    def get_accuracy(
        self,
        query: torch.Tensor,
        query_labels: torch.Tensor,
        reference: Optional[torch.Tensor] = None,
        reference_labels: Optional[torch.Tensor] = None,
        ref_includes_query: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> dict:
        if reference is None:
            reference, reference_labels, ref_includes_query = query, query_labels, True
        metrics = list(self.get_function_dict(include, exclude))
        clustering = [m for m in metrics if m in self.requires_clustering()]
        results = {}
        if clustering:
            results = super().get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query, include=clustering)
        knn_metrics = [m for m in metrics if m not in clustering]
        if knn_metrics:
            results.update(self._blocked_knn_metrics(query, query_labels, reference, reference_labels, ref_includes_query, knn_metrics))
        self.curr_function_dict = self.get_function_dict(include, exclude)
        return {m: results[m] for m in metrics}

    @torch.no_grad()
    def _blocked_knn_metrics(self, query, query_labels, reference, reference_labels, ref_includes_query: bool, metrics: list) -> dict:
        query, reference = (torch.as_tensor(x, device=self.device).float() for x in (query, reference))
        query_labels, reference_labels = (torch.as_tensor(x, device=self.device).long() for x in (query_labels, reference_labels))
        classes, dense = torch.unique(torch.cat([query_labels, reference_labels]), return_inverse=True)
        query_labels, reference_labels = dense[: len(query_labels)], dense[len(query_labels) :]
        reference_counts = torch.bincount(reference_labels, minlength=len(classes))
        not_lone = reference_counts[query_labels] - int(ref_includes_query) > 0
        if not not_lone.any():
            return {m: float("nan") for m in metrics}
        recall_ks = [k for k in self.recall_at if f"recall_at_{k}" in metrics]
        # Enough neighbours for every query's R (MAP@R, R-precision) and for the largest Recall K.
        largest_class = int(reference_counts[query_labels].max()) - int(ref_includes_query)
        k = min(max([largest_class, 1] + recall_ks), len(reference) - int(ref_includes_query))
        totals = dict.fromkeys(metrics, 0.0)
        for start in range(0, len(query), self.block_size):
            block = slice(start, start + self.block_size)
            _, indices = self.knn_func(query[block], k + int(ref_includes_query), reference, False)
            indices = indices.to(self.device)
            if ref_includes_query:  # drop each query itself (PML's knn functions assume a block starting at 0)
                is_self = indices == torch.arange(start, start + len(indices), device=self.device)[:, None]
                is_self[~is_self.any(dim=1), -1] = True
                indices = indices[~is_self].view(len(indices), k)
            block_labels, block_not_lone = query_labels[block], not_lone[block]
            num_counted = int(block_not_lone.sum())
            if num_counted == 0:
                continue
            knn_labels = reference_labels[indices]
            present = torch.unique(block_labels)
            kwargs = dict(
                knn_labels=knn_labels.float(),
                query_labels=block_labels.float(),
                not_lone_query_mask=block_not_lone,
                ref_includes_query=ref_includes_query,
                label_counts=(present.float(), reference_counts[present]),
                label_comparison_fn=self.label_comparison_fn,
            )
            hit_rank = _first_hit_rank(knn_labels[block_not_lone], block_labels[block_not_lone])
            for metric in metrics:
                if metric.startswith("recall_at_"):
                    value = (hit_rank < int(metric.rsplit("_", 1)[1])).float().mean().item()
                else:
                    value = self.original_function_dict[metric](**kwargs)
                totals[metric] += value * num_counted
        return {m: total / int(not_lone.sum()) for m, total in totals.items()}


def _first_hit_rank(knn_labels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The 0-based rank of each query's first same-class neighbour; ``k`` where there is none."""
    same = knn_labels == labels[:, None]
    return torch.where(same.any(dim=1), same.float().argmax(dim=1), torch.full_like(labels, knn_labels.shape[1]))


def build_accuracy_calculator(
    recall_at: Sequence[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
    *,
    knn: str = "auto",
    knn_batch_size: int = 1024,
    device: Optional[torch.device] = None,
) -> RecallAtKCalculator:
    """The calculator the recipes evaluate with.

    Args:
        recall_at: the protocol's Recall@K values.
        metrics: PML metric names to compute besides Recall@K.
        knn: ``faiss`` (faiss-gpu on CUDA tensors where installed), ``torch`` (PML's blocked kNN: ``knn_batch_size``
            query rows at a time, so memory stays bounded at Stanford Online Products scale), or ``auto``.
        knn_batch_size: queries per block of the search (faiss or torch) and of the metrics.
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
    return RecallAtKCalculator(
        recall_at, knn_batch_size, include=include, knn_func=knn_func, kmeans_func=kmeans_func, device=device
    )


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
    return (predict_nearest_mean(embeddings, means).cpu() == labels.cpu()).float().mean().item()

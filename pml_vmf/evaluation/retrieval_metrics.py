"""Retrieval metrics with PML's AccuracyCalculator, plus Recall@K for a protocol's Ks."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..class_means import predict_nearest_mean
from ..pml_api import AccuracyCalculator, CosineSimilarity, CustomKNN
from .faiss_index import FaissIndexKNN


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _sklearn_kmeans(x: torch.Tensor, num_clusters: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    labels = KMeans(num_clusters, n_init=1, random_state=0).fit_predict(x.cpu().numpy())
    return torch.as_tensor(labels, device=x.device)


class RecallAtKCalculator(AccuracyCalculator):
    """PML's AccuracyCalculator with ``recall_at_<k>`` metrics and a neighbour search in blocks of queries.

    ``recall_at_<k>`` is the share of queries with a same-class reference among their k nearest (the Recall@K of the
    DML literature). PML's own k-NN metrics (precision@1, R-precision, MAP@R) are computed by PML's functions,
    ``block_size`` queries at a time, each block's value weighted by its number of queries, and the mean reciprocal
    rank from each query's first hit: the same numbers as one ``AccuracyCalculator`` call over all queries with the
    same ``k`` (None, the default: every reference; ``"max_bin_count"``; or an int), without the
    ``(num_queries x k)`` neighbour table and per-class loops PML builds for the whole set, so memory stays bounded at
    Stanford Online Products scale (60k queries, 11k classes, Recall@1000). With ``k=None`` the search goes as deep as
    the largest class and the Recall Ks, and only queries with no hit there are searched deeper, for their reciprocal
    rank. Clustering metrics (NMI, AMI) run through PML unchanged. Queries whose class has no other reference are
    left out, as PML does. With :class:`FaissIndexKNN` as ``knn_func`` the reference is indexed once per call.

    Args:
        recall_at: the Ks.
        block_size: queries per block.
        **kwargs: AccuracyCalculator's arguments (``include``, ``k``, ``knn_func``, ``kmeans_func``, ``device``). ``include``
            may name ``recall_at_<k>`` for any k in ``recall_at``. Per-class averages and custom label comparisons
            are not supported.
    """

    BLOCKED_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank")

    def __init__(self, recall_at: Sequence[int] = (1, 2, 4, 8), block_size: int = 4096, **kwargs) -> None:
        for unsupported in ("avg_of_avgs", "return_per_class", "label_comparison_fn"):
            if kwargs.get(unsupported):
                raise NotImplementedError(
                    f"RecallAtKCalculator does not support {unsupported}; use PML's AccuracyCalculator."
                )
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
            results = super().get_accuracy(
                query, query_labels, reference, reference_labels, ref_includes_query, include=clustering
            )
        knn_metrics = [m for m in metrics if m not in clustering]
        if knn_metrics:
            results.update(
                self._blocked_knn_metrics(
                    query, query_labels, reference, reference_labels, ref_includes_query, knn_metrics
                )
            )
        self.curr_function_dict = self.get_function_dict(include, exclude)
        return {m: results[m] for m in metrics}

    @torch.no_grad()
    def _blocked_knn_metrics(
        self, query, query_labels, reference, reference_labels, ref_includes_query: bool, metrics: list
    ) -> dict:
        query, reference = (torch.as_tensor(x, device=self.device).float() for x in (query, reference))
        query_labels, reference_labels = (
            torch.as_tensor(x, device=self.device).long() for x in (query_labels, reference_labels)
        )
        classes, dense = torch.unique(torch.cat([query_labels, reference_labels]), return_inverse=True)
        query_labels, reference_labels = dense[: len(query_labels)], dense[len(query_labels) :]
        self_count = int(ref_includes_query)
        reference_counts = torch.bincount(reference_labels, minlength=len(classes))
        not_lone = reference_counts[query_labels] - self_count > 0
        if not not_lone.any():
            return {m: float("nan") for m in metrics}
        most = len(reference) - self_count  # neighbours a query can have
        # PML's k: every reference (k=None), the largest class ("max_bin_count") or the k given. Only the reciprocal
        # rank looks past a query's own class size R, so with k=None the search stops at the largest class and
        # queries with no hit there are searched further (_first_hits_beyond).
        pml_k = min(
            self.determine_k(reference_counts[torch.unique(query_labels)], len(reference), ref_includes_query), most
        )
        largest_class = int(reference_counts[query_labels].max()) - self_count
        k_metrics = min(max(largest_class, 1), pml_k) if self.k is None else pml_k
        recall_ks = [k for k in self.recall_at if f"recall_at_{k}" in metrics]
        k = min(max([k_metrics] + recall_ks), most)
        totals = dict.fromkeys(metrics, 0.0)
        with self._searcher(reference, ref_includes_query) as search:
            for start in range(0, len(query), self.block_size):
                positions = torch.arange(start, min(start + self.block_size, len(query)), device=self.device)
                block_not_lone = not_lone[positions]
                num_counted = int(block_not_lone.sum())
                if num_counted == 0:
                    continue
                positions = positions[block_not_lone]
                block_labels = query_labels[positions]
                knn_labels = reference_labels[search(query[positions], positions, k)]
                hit_rank = _first_hit_rank(knn_labels, block_labels)
                if "mean_reciprocal_rank" in metrics and self.k is None and k < most:
                    missed = hit_rank == k
                    if missed.any():
                        hit_rank[missed] = self._first_hits_beyond(
                            search, query, positions[missed], block_labels[missed], reference_labels, k, most
                        )
                present = torch.unique(block_labels)
                pml_kwargs = dict(
                    knn_labels=knn_labels[:, :k_metrics].float(),
                    query_labels=block_labels.float(),
                    not_lone_query_mask=torch.ones_like(block_labels, dtype=torch.bool),
                    ref_includes_query=ref_includes_query,
                    label_counts=(present.float(), reference_counts[present]),
                    label_comparison_fn=self.label_comparison_fn,
                )
                for metric in metrics:
                    if metric.startswith("recall_at_"):
                        value = (hit_rank < int(metric.rsplit("_", 1)[1])).float().mean().item()
                    elif metric == "mean_reciprocal_rank":  # PML's: 1 / rank of the first hit within its k, else 0
                        value = torch.where(hit_rank < pml_k, 1.0 / (hit_rank + 1.0), 0.0).mean().item()
                    else:
                        value = self.original_function_dict[metric](**pml_kwargs)
                    totals[metric] += value * num_counted
        return {m: total / int(not_lone.sum()) for m, total in totals.items()}

    @contextlib.contextmanager
    def _searcher(self, reference: torch.Tensor, ref_includes_query: bool) -> Iterator[Callable]:
        """Yields ``search(queries, positions, k)``: the indices of each query's k nearest references, the query
        itself left out when the reference holds the queries (``positions`` are the queries' rows in it). The
        reference is indexed once for all the blocks when the kNN function can (:class:`FaissIndexKNN`)."""
        if isinstance(self.knn_func, FaissIndexKNN):
            context = self.knn_func.indexed(reference)
        else:
            context = contextlib.nullcontext(lambda q, k, _: self.knn_func(q, k, reference, False))
        with context as raw_search:

            def search(queries: torch.Tensor, positions: torch.Tensor, k: int) -> torch.Tensor:
                _, indices = raw_search(queries, k + int(ref_includes_query), False)
                indices = indices.to(self.device)
                if ref_includes_query:  # drop each query itself (PML's knn functions assume a block starting at 0)
                    is_self = indices == positions[:, None]
                    is_self[~is_self.any(dim=1), -1] = True
                    indices = indices[~is_self].view(len(indices), k)
                return indices

            yield search

    def _first_hits_beyond(
        self, search: Callable, query, positions, labels, reference_labels, k: int, most: int
    ) -> torch.Tensor:
        """The 0-based rank of the first same-class reference of queries that have none among their ``k`` nearest:
        searched again with k doubled until found, in blocks of at most ``block_size * k`` neighbours."""
        ranks = torch.full_like(labels, most)
        pending = torch.arange(len(labels), device=labels.device)
        budget = self.block_size * k
        while pending.numel() and k < most:
            k = min(2 * k, most)
            step = max(1, budget // k)
            still = []
            for chunk in pending.split(step):
                found = _first_hit_rank(
                    reference_labels[search(query[positions[chunk]], positions[chunk], k)], labels[chunk]
                )
                ranks[chunk] = found
                still.append(chunk[found == k])
            pending = torch.cat(still)
        return ranks


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
        raise ValueError(
            "eval.knn=faiss but faiss is not installed: pip install faiss-cpu (or faiss-gpu), or use eval.knn=torch."
        )
    # Embeddings are L2-normalised before the search: faiss's L2 ranking is then the cosine ranking.
    knn_func = FaissIndexKNN() if use_faiss else CustomKNN(CosineSimilarity(), batch_size=knn_batch_size)
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
        for k, v in calculator.get_accuracy(
            query, query_labels, reference, reference_labels, ref_includes_query=False
        ).items()
    }


def nearest_mean_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> float:
    """Classification accuracy of ``argmax_c mu_c . z``; classes whose mean row is zero are never predicted."""
    return (predict_nearest_mean(embeddings, means).cpu() == labels.cpu()).float().mean().item()

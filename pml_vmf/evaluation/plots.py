"""Plots of a run: training curves per epoch and a retrieval grid of queries with their nearest references."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CURVE_METRICS = ("mean_average_precision_at_r", "precision_at_1", "r_precision", "recall_at_1")


def plot_training_curves(records: Sequence[dict], path: Path) -> Path:
    """Training loss and validation metrics per epoch, from the lines of ``metrics.jsonl``."""
    epochs = [r for r in records if r.get("split") == "val" or "train_loss" in r]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    with_loss = [r for r in epochs if r.get("train_loss") is not None]
    loss_ax.plot([r["epoch"] for r in with_loss], [r["train_loss"] for r in with_loss], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    val = [r for r in records if r.get("split") == "val"]
    for name in CURVE_METRICS:
        points = [(r["epoch"], r[name]) for r in val if name in r]
        if points:
            metric_ax.plot(*zip(*points), marker="o", label=name)
    metric_ax.set(xlabel="epoch", ylabel="value", title="Validation metrics", ylim=(0, 1))
    if metric_ax.lines:
        metric_ax.legend(fontsize=8)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_retrieval_grid(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    load_image: Callable[[int], "object"],
    path: Path,
    *,
    reference: Optional[torch.Tensor] = None,
    reference_labels: Optional[torch.Tensor] = None,
    load_reference_image: Optional[Callable[[int], "object"]] = None,
    num_queries: int = 8,
    top_k: int = 5,
    seed: int = 0,
) -> Path:
    """Queries (first column) with their ``top_k`` nearest references by cosine: green frames same class, red not.

    Args:
        query, query_labels: query embeddings and labels.
        load_image: index -> PIL image of a query.
        path: the PNG to write.
        reference, reference_labels, load_reference_image: the gallery; None to search the queries themselves
            (leaving each query out).
        num_queries: rows; queries are drawn at random with ``seed``.
        top_k: results per query.
    """
    leave_one_out = reference is None
    if leave_one_out:
        reference, reference_labels, load_reference_image = query, query_labels, load_image
    chosen = np.random.default_rng(seed).choice(len(query), size=min(num_queries, len(query)), replace=False)
    similarities = F.normalize(query[chosen].float(), dim=1) @ F.normalize(reference.float(), dim=1).T
    if leave_one_out:
        similarities[torch.arange(len(chosen)), torch.as_tensor(chosen)] = -np.inf
    neighbours = similarities.topk(min(top_k, similarities.shape[1]), dim=1).indices
    fig, axes = plt.subplots(len(chosen), top_k + 1, figsize=(1.6 * (top_k + 1), 1.6 * len(chosen)), squeeze=False)
    for row, q in enumerate(chosen):
        axes[row, 0].imshow(load_image(int(q)))
        axes[row, 0].set_title("query", fontsize=8)
        for col, r in enumerate(neighbours[row].tolist(), start=1):
            ax = axes[row, col]
            ax.imshow(load_reference_image(r))
            correct = bool(reference_labels[r] == query_labels[q])
            for spine in ax.spines.values():
                spine.set(edgecolor="tab:green" if correct else "tab:red", linewidth=3)
            ax.set_title(f"#{col} {'right' if correct else 'wrong'}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

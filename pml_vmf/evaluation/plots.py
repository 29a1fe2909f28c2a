"""Plots of a run: training curves per epoch and a retrieval grid of queries with their nearest references."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CURVE_METRICS = ("mean_average_precision_at_r", "precision_at_1", "r_precision")
# Equal by definition (the nearest neighbour is of the query's class): one line, both names.
SAME_AS = {"precision_at_1": "recall_at_1"}


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` values (fewer at the start), as loss curves are usually shown."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def training_curves_figure(records: Sequence[dict], steps: Sequence[dict] = ()) -> plt.Figure:
    """The figure of :func:`plot_training_curves`: training loss per step (raw and smoothed; per epoch without
    step records) and the validation metrics, both against the epoch."""
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    if steps:
        per_epoch = max(s["step"] for s in steps)  # steps of a full epoch
        x = [s["epoch"] + s["step"] / per_epoch for s in steps]
        losses = [s["loss"] for s in steps]
        window = max(1, min(50, len(steps) // 10))
        loss_ax.plot(x, losses, alpha=0.25, linewidth=0.8, color="C0", label="per step")
        loss_ax.plot(x, smooth(losses, window), color="C0", label=f"moving average of {window}")
        loss_ax.legend(fontsize=8)
    else:
        with_loss = [r for r in records if r.get("train_loss") is not None]
        loss_ax.plot([r["epoch"] + 1 for r in with_loss], [r["train_loss"] for r in with_loss], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    val = [r for r in records if r.get("split") == "val"]
    for name in CURVE_METRICS:
        points = [(r["epoch"] + 1, r[name]) for r in val if name in r]
        if points:
            label = f"{name} = {SAME_AS[name]}" if name in SAME_AS and any(SAME_AS[name] in r for r in val) else name
            metric_ax.plot(*zip(*points), marker="o", label=label)
    metric_ax.set(xlabel="epoch", ylabel="value", title="Validation metrics (after each epoch)", ylim=(0, 1))
    if metric_ax.lines:
        metric_ax.legend(fontsize=8)
    for ax in (loss_ax, metric_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_training_curves(records: Sequence[dict], path: Path, steps: Sequence[dict] = ()) -> Path:
    """Writes :func:`training_curves_figure` of ``metrics.jsonl``'s records and ``train_steps.jsonl``'s steps."""
    fig = training_curves_figure(records, steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_retrieval_grid(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    load_image: Callable[[int], object],
    path: Path,
    *,
    reference: Optional[torch.Tensor] = None,
    reference_labels: Optional[torch.Tensor] = None,
    load_reference_image: Optional[Callable[[int], object]] = None,
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


def plot_search_grid(
    queries: list, results: list, scores: torch.Tensor, path: Path, max_queries: int = 8, top_k: int = 5
) -> Path:
    """Unlabelled search results: each query (first column) with its nearest images and their cosine similarity.

    Args:
        queries: PIL images.
        results: per query, the PIL images of its results, best first.
        scores: ``(Q, k)`` cosine similarities of those results.
        path: the PNG to write.
    """
    rows = min(max_queries, len(queries))
    cols = min(top_k, max((len(r) for r in results[:rows]), default=0)) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(queries[row])
        axes[row, 0].set_title("query", fontsize=8)
        for col, image in enumerate(results[row][: cols - 1], start=1):
            axes[row, col].imshow(image)
            axes[row, col].set_title(f"#{col} cos {float(scores[row, col - 1]):.3f}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

"""The loss benchmark's plots: headline test metrics per loss, the validation score per epoch and against training
time, and tuning curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def metric_label(metric: str) -> str:
    """``MAP@R`` for ``mean_average_precision_at_r``; other metric names as they are."""
    return {"mean_average_precision_at_r": "MAP@R", "classifier_accuracy": "classification accuracy"}.get(
        metric, metric
    )


def plot_benchmark(
    rows: Sequence[dict],
    validation_curves: dict,
    folder: Path,
    metrics: Sequence[str],
    validation_metric: str = "mean_average_precision_at_r",
) -> list:
    """The benchmark's plots: headline test metrics per loss (mean, std error bars), the validation score per epoch.

    Args:
        rows: the final runs' CSV rows (``loss`` and one column per metric).
        validation_curves: loss -> list over seeds of ``[(epoch, training seconds, validation score), ...]``.
        folder: where to write ``headline_metrics.png`` and ``validation_<metric>.png`` (``validation_map_at_r.png``
            for MAP@R).
        metrics: the headline metric columns.
        validation_metric: the metric of the curves (the runs' ``eval.select_by``).
    """
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(losses) * len(metrics) / 2), 4))
    width = 0.8 / max(1, len(metrics))
    for i, metric in enumerate(metrics):
        values = [[float(r[metric]) for r in rows if r["loss"] == loss and r.get(metric, "") != ""] for loss in losses]
        means = [np.mean(v) if v else np.nan for v in values]
        errors = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(np.arange(len(losses)) + i * width, means, width, yerr=errors, capsize=3, label=metric)
    ax.set_xticks(np.arange(len(losses)) + width * (len(metrics) - 1) / 2, losses, rotation=20)
    ax.set(ylabel="test value (mean ± std over seeds)", ylim=(0, 1), title="Test metrics per loss")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    label = metric_label(validation_metric)
    short = "map_at_r" if validation_metric == "mean_average_precision_at_r" else validation_metric
    paths = [folder / "headline_metrics.png", folder / f"validation_{short}.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for loss, curves in validation_curves.items():
        epochs = sorted({e for curve in curves for e, _, _ in curve})
        mean = [np.mean([v for curve in curves for e2, _, v in curve if e2 == e]) for e in epochs]
        ax.plot(epochs, mean, marker="o", label=loss)
    ax.set(xlabel="epoch", ylabel=f"validation {label} (mean over seeds)", title=f"Validation {label} per epoch")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def plot_time_to_accuracy(
    validation_curves: dict, path: Path, validation_metric: str = "mean_average_precision_at_r"
) -> Path:
    """The validation score against cumulative training seconds, one line per run, one colour per loss: which loss
    reaches an accuracy first, its mean steps included.

    Args:
        validation_curves: loss -> list over seeds of ``[(epoch, training seconds, validation score), ...]``.
        path: the PNG to write.
        validation_metric: the metric of the curves (the runs' ``eval.select_by``).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (loss, curves) in enumerate(validation_curves.items()):
        for j, curve in enumerate(curves):
            ax.plot(
                [s for _, s, _ in curve],
                [v for _, _, v in curve],
                marker=".",
                color=f"C{i}",
                alpha=0.8,
                label=loss if j == 0 else None,
            )
    ax.set(
        xlabel="training seconds (steps and mean updates, cumulative)",
        ylabel=f"validation {metric_label(validation_metric)}",
        title="Time to accuracy (one line per seed)",
    )
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tuning_curves(rows: Sequence[dict], grid: dict, folder: Path) -> list:
    """One plot per tuned loss: validation MAP@R (which picks the value) and test MAP@R against the tuned value.

    Args:
        rows: the benchmark's CSV rows; the ``phase == "tune"`` ones are plotted.
        grid: loss -> (parameter, candidate values), as parsed from ``--tune``.
        folder: where to write ``tuning_<loss>_<param>.png``.
    """
    paths = []
    for loss, (param, _) in grid.items():
        tuned = sorted((float(r["value"]), r) for r in rows if r["phase"] == "tune" and r["loss"] == loss)
        if len(tuned) < 2:
            continue
        values = [v for v, _ in tuned]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for column, label in (
            ("best_val_map_at_r", "validation (selected epoch)"),
            ("mean_average_precision_at_r", "test"),
        ):
            ax.plot(
                values,
                [float(r[column]) if r.get(column, "") != "" else np.nan for _, r in tuned],
                marker="o",
                label=label,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set(xlabel=param, ylabel="MAP@R", title=f"{loss}: {param} (first seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"tuning_{loss}_{param}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths

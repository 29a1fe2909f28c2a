"""Benchmark losses on one recipe config: tune each loss's main parameter on validation, then train every seed.

Every run is a :class:`RecipeRun` in ``<out>/runs/<name>``; each finished run is one row of ``<out>/runs.csv``. A
rerun skips the runs already in the CSV and resumes one that stopped mid-way from its last checkpoint.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from pml_vmf.errors import ConfigError
from pml_vmf.training import RecipeRun, load_config
from pml_vmf.training.config import parse_override
from pml_vmf.training.run_folder import RunFolder

HEADLINE = (
    "mean_average_precision_at_r", "recall_at_1", "r_precision", "precision_at_1", "classifier_accuracy", "nearest_mean_accuracy",
)  # fmt: skip
VALIDATION_METRIC = "mean_average_precision_at_r"
# ``--tune default``: per loss, its main hyper-parameter at the registry default and one step either side.
TUNING_GRIDS = {
    "vmf": ("kappa", (8.0, 16.0, 32.0)),
    "triplet": ("margin", (0.05, 0.1, 0.2)),
    "contrastive": ("neg_margin", (0.6, 0.8, 1.0)),
    "multi_similarity": ("base", (0.3, 0.5, 0.7)),
    "proxy_anchor": ("alpha", (16.0, 32.0, 64.0)),
    "normalized_softmax": ("temperature", (0.025, 0.05, 0.1)),
    "arcface": ("scale", (16.0, 32.0, 64.0)),
}


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the benchmark.

    Attributes:
        name: its folder name and CSV key.
        phase: ``baseline`` (the network before training, ``train.epochs=0``, evaluated the same way), ``tune``
            (seed 0, one candidate value) or ``final``.
        loss: the loss name.
        seed: the run's seed.
        param: the tuned parameter (``loss.params.<loss>.<param>``), or None.
        value: its value in this run, or None.
    """

    name: str
    phase: str
    loss: str
    seed: int
    param: Optional[str] = None
    value: Optional[float] = None

    def overrides(self) -> list:
        items = [f"loss.name={self.loss}", f"run.seed={self.seed}", f"run.name={self.name}"]
        if self.phase == "baseline":
            items.append("train.epochs=0")
        if self.param is not None:
            items.append(f"loss.params.{self.loss}.{self.param}={self.value}")
        return items


def parse_grid(items: Sequence[str], losses: Sequence[str] = ()) -> dict:
    """``["vmf.kappa=8,16,32", ...]`` -> ``{"vmf": ("kappa", [8.0, 16.0, 32.0])}``.

    The item ``default`` adds, for each of ``losses`` that has one, its :data:`TUNING_GRIDS` grid (the main
    hyper-parameter at its default and one step either side); explicit items override it per loss.
    """
    grid = {}
    if "default" in items:
        grid = {loss: (TUNING_GRIDS[loss][0], list(TUNING_GRIDS[loss][1])) for loss in losses if loss in TUNING_GRIDS}
    for item in items:
        if item == "default":
            continue
        key, values = parse_override(item)
        if key.count(".") != 1:
            raise ConfigError(f"--tune {item!r}: write LOSS.PARAM=V1,V2,... (e.g. vmf.kappa=8,16,32) or default.")
        loss, param = key.split(".")
        values = values if isinstance(values, list) else [float(v) for v in str(values).split(",")]
        grid[loss] = (param, [float(v) for v in values])
    return grid


def headline_metrics(rows: list) -> list:
    """The :data:`HEADLINE` metrics that some of ``rows`` report."""
    return [m for m in HEADLINE if any(r.get(m, "") != "" for r in rows)]


def run_one(config_path: Optional[str], overrides: list, planned: PlannedRun, runs_dir: Path) -> dict:
    """Trains one planned run (resuming it if it stopped) and returns its CSV row."""
    folder = RunFolder(runs_dir / planned.name)
    config = load_config(config_path, [*overrides, f"run.output_dir={runs_dir}", *planned.overrides()])
    run = RecipeRun(config, resume=folder.holds_a_run())  # a folder without a checkpoint starts from the beginning
    metrics = run.fit() or {}
    is_main = run.accelerator.is_main_process
    del run
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not is_main:
        return {}
    log = folder.read_metrics_log()
    epochs = [r for r in log if "train_loss" in r]
    select_by = config.eval.select_by
    curve = validation_curve(log, select_by)
    best = max(curve, key=lambda point: point[2]) if curve else None  # the first best, as the run's checkpoint
    best_record = next((r for r in log if r.get("split") == "val" and best and r["epoch"] == best[0]), {})
    return {
        "name": planned.name, "folder": planned.name, "phase": planned.phase, "loss": planned.loss, "seed": planned.seed,
        "param": planned.param or "", "value": "" if planned.value is None else planned.value,
        "select_by": select_by,
        "best_val_score": best[2] if best else "",
        "best_val_map_at_r": best_record.get(VALIDATION_METRIC, ""),  # at the selected epoch
        "best_val_epoch": best[0] if best else "",
        "seconds_to_best_val": best[1] if best else "",
        **{k: v for k, v in metrics.items() if not k.startswith("num_")},
        "train_seconds": round(sum(r["train_seconds"] for r in epochs), 2),
        "seconds_per_epoch": round(statistics.mean(r["train_seconds"] for r in epochs), 2) if epochs else "",
        "peak_memory_mb": round(max(r["peak_memory_mb"] for r in epochs), 1) if epochs else "",
    }  # fmt: skip


def validation_curve(log: Sequence[dict], metric: str = VALIDATION_METRIC) -> list:
    """``[(epoch, training seconds up to its end, validation metric), ...]`` from a run's ``metrics.jsonl`` records:
    the time-to-accuracy curve. The seconds are the epochs' ``train_seconds`` (steps and mean updates, not the
    validation), summed over every epoch so far, validated or not."""
    curve, seconds = [], 0.0
    for record in log:
        if "train_loss" not in record:
            continue
        seconds += record["train_seconds"]
        if record.get("split") == "val" and metric in record:
            curve.append((record["epoch"], round(seconds, 2), record[metric]))
    return curve


def validation_curve_rows(
    rows: Sequence[dict], runs_dir: Path, metric: str = VALIDATION_METRIC, previous: Sequence[dict] = ()
) -> list:
    """Every trained run's :func:`validation_curve` as CSV rows (``name``, ``loss``, ``seed``, ``phase``, ``epoch``,
    ``train_seconds`` cumulative, ``metric``, ``value``): the benchmark's ``validation_curves.csv``, committed beside
    ``runs.csv`` while the run folders (checkpoints) are not.

    Args:
        previous: the rows of the ``validation_curves.csv`` already written. A run whose folder has no log (a
            benchmark continued in a fresh clone, where only the committed CSVs are) keeps its rows from there.
    """
    out = []
    for row in rows:
        if row.get("phase") == "baseline":
            continue
        curve = validation_curve(RunFolder(runs_dir / row["folder"]).read_metrics_log(), metric)
        if not curve:
            kept = [r for r in previous if r["name"] == row["name"]]
            out += [
                dict(r, epoch=int(r["epoch"]), train_seconds=float(r["train_seconds"]), value=float(r["value"]))
                for r in kept
            ]
            continue
        for epoch, seconds, value in curve:
            out.append({
                "name": row["name"], "loss": row["loss"], "seed": row["seed"], "phase": row["phase"], "epoch": epoch,
                "train_seconds": seconds, "metric": metric, "value": value,
            })  # fmt: skip
    return out


def best_validation_score(row: dict) -> str:
    """A row's best validation score by its run's ``eval.select_by`` (rows written before that column: MAP@R)."""
    return row.get("best_val_score") or row.get("best_val_map_at_r", "")


def winners(rows: list, grid: dict) -> dict:
    """Per tuned loss, the value with the best validation score (``eval.select_by``) among its finished tuning runs."""
    chosen = {}
    for loss, (_, values) in grid.items():
        tuned = [r for r in rows if r["phase"] == "tune" and r["loss"] == loss and best_validation_score(r) != ""]
        if len(tuned) == len(values):
            chosen[loss] = float(max(tuned, key=lambda r: float(best_validation_score(r)))["value"])
    return chosen


def final_rows(rows: list, grid: dict) -> list:
    """The final runs of this benchmark's setting: tuned losses at their winning value, the others at defaults."""
    chosen = winners(rows, grid)
    return [
        r for r in rows
        if r["phase"] == "final" and (float(r["value"]) == chosen.get(r["loss"]) if r["loss"] in grid else r["param"] == "")
    ]  # fmt: skip


def mean_and_spread(values: Sequence[float], digits: int = 3) -> str:
    """``"0.512 ± 0.004"``: the mean and, where there are several values, their standard deviation."""
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


BASELINE_NAME = "baseline-untrained"
BELOW_BASELINE = " (not above untrained)"


def summary_table(rows: list, grid: dict) -> str:
    """Markdown: mean +- std over seeds per loss of the headline metrics, time (per epoch, and training seconds to
    the best validation epoch) and memory, and the tuned value.

    The first row, where the benchmark has one, is the network before training evaluated the same way; a loss whose
    mean first headline metric does not clear it is flagged.
    """
    final = final_rows(rows, grid)
    losses = list(dict.fromkeys(r["loss"] for r in final))
    metrics = headline_metrics(final)
    header = ["loss", "tuned value", "seeds", *metrics, "s / epoch", "s to best val", "peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    baseline = next((r for r in rows if r["phase"] == "baseline"), None)
    if baseline is not None:
        cells = ["untrained network (train.epochs=0)", "", "1"]
        cells += [f"{float(baseline[m]):.3f}" if baseline.get(m, "") != "" else "" for m in metrics] + ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    chosen = winners(rows, grid)
    for loss in losses:
        mine = [r for r in final if r["loss"] == loss]
        flag = ""
        if baseline is not None and metrics and baseline.get(metrics[0], "") != "":
            values = [float(r[metrics[0]]) for r in mine if r.get(metrics[0], "") != ""]
            flag = BELOW_BASELINE if values and statistics.mean(values) <= float(baseline[metrics[0]]) else ""
        cells = [loss + flag, f"{grid[loss][0]}={chosen[loss]:g}" if loss in chosen else "default", str(len(mine))]
        for metric in [*metrics, "seconds_per_epoch", "seconds_to_best_val", "peak_memory_mb"]:
            values = [float(r[metric]) for r in mine if r.get(metric, "") != ""]
            if not values:
                cells.append("")
            elif metric not in metrics:
                cells.append(f"{statistics.mean(values):.1f}")
            else:
                cells.append(mean_and_spread(values))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def final_name(loss: str, seed: int, param: str | None = None, value: float | None = None) -> str:
    """``vmf-kappa16-seed1`` for a tuned loss, ``triplet-seed1`` for one trained with its defaults."""
    return f"{loss}-{param}{value:g}-seed{seed}" if param is not None else f"{loss}-seed{seed}"


def plan(losses: list, seeds: list, grid: dict, rows: list, baseline: bool = True) -> list:
    """The runs still to do, in order: the untrained baseline first, then per loss its tuning runs and, once they
    are all in ``rows``, its seed runs."""
    chosen = winners(rows, grid)
    todo = [PlannedRun(BASELINE_NAME, "baseline", losses[0], seeds[0])] if baseline else []
    for loss in losses:
        if loss in grid:
            param, values = grid[loss]
            todo += [PlannedRun(f"tune-{loss}-{param}{v:g}", "tune", loss, seeds[0], param, v) for v in values]
            if loss in chosen:
                todo += [
                    PlannedRun(final_name(loss, s, param, chosen[loss]), "final", loss, s, param, chosen[loss])
                    for s in seeds
                ]
        else:
            todo += [PlannedRun(final_name(loss, s), "final", loss, s) for s in seeds]
    done = {r["name"] for r in rows}
    return [p for p in todo if p.name not in done]


def reuse_winning_tuning_runs(rows: list, grid: dict, first_seed: int) -> list:
    """The first seed's final rows of newly tuned losses: copies of their winning tuning run, not trained again."""
    names = {r["name"] for r in rows}
    copies = []
    for loss, value in winners(rows, grid).items():
        name = final_name(loss, first_seed, grid[loss][0], value)
        if name not in names:
            best = next(r for r in rows if r["phase"] == "tune" and r["loss"] == loss and float(r["value"]) == value)
            copies.append({**best, "name": name, "phase": "final"})
    return copies

"""Time to accuracy across benchmark folders: which setting reaches a validation score first, mean steps included.

Each loss is best run in its own benchmark folder when it needs its own settings (vMF without the head warm-up, the
proxy losses with it), so the comparison spans folders. This reads the ``final`` runs of every folder given
(benchmarks/benchmark.py ``--out``: its ``runs.csv`` and ``validation_curves.csv``), and prints per setting its best
epoch, test metric, best validation score and the training seconds to reach it; then, per seed, the training seconds
and epochs each setting needs to reach the **target** setting's best validation score of the same seed (the target:
``--target``, default the setting with the best mean validation score), and writes one figure of validation score
against cumulative training seconds, every run. Seconds compare only runs made side by side; epochs compare across
sessions, at the seconds per epoch measured side by side (benchmarks/mean_step_cost.py).

    python benchmarks/time_to_accuracy.py benchmarks/results/emoji_convergence/{vmf,multi_similarity,triplet} \\
        --out benchmarks/results/emoji_convergence/time_to_accuracy.png
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from benchmark_plots import plot_time_to_accuracy  # benchmarks/, beside this script
from loss_benchmark import VALIDATION_METRIC, mean_and_spread

from pml_vmf.files import read_rows


@dataclass(frozen=True)
class Setting:
    """The final runs of one loss in one benchmark folder.

    Attributes:
        label: the loss, with its folder's name where two folders hold the same loss.
        rows: its ``runs.csv`` rows, one per seed.
        curves: per seed, ``[(epoch, cumulative training seconds, validation score), ...]``.
    """

    label: str
    rows: tuple
    curves: dict

    def best(self, seed: int) -> tuple:
        """``(epoch, seconds, score)`` of the seed's best validation score (the first, as the run selects)."""
        return max(self.curves[seed], key=lambda point: point[2])


def load_settings(folders: Sequence[Path]) -> tuple:
    """``(settings, metric)``: one :class:`Setting` per loss and folder, from its ``runs.csv`` and
    ``validation_curves.csv`` (benchmarks/benchmark.py writes both; rerunning a finished benchmark's command rewrites
    them), and the validation metric the runs selected by.

    Raises:
        ValueError: for a folder without final runs or curves, or folders that selected by different metrics.
    """
    found, metrics = [], set()
    for folder in folders:
        rows = [r for r in read_rows(folder / "runs.csv") if r.get("phase") == "final"]
        curve_rows = read_rows(folder / "validation_curves.csv")
        if not rows or not curve_rows:
            raise ValueError(
                f"{folder} has no finished final runs with validation curves (runs.csv, validation_curves.csv): pass the "
                "--out folder of benchmarks/benchmark.py, or rerun its command to write the curves."
            )
        metrics |= {r["metric"] for r in curve_rows}
        for loss in dict.fromkeys(r["loss"] for r in rows):
            mine = tuple(r for r in rows if r["loss"] == loss)
            curves = {
                int(r["seed"]): [(int(c["epoch"]), float(c["train_seconds"]), float(c["value"])) for c in curve_rows if c["name"] == r["name"]]
                for r in mine
            }  # fmt: skip
            found.append((folder, loss, mine, {seed: curve for seed, curve in curves.items() if curve}))
    if len(metrics) > 1:
        raise ValueError(
            f"The runs selected their checkpoints by different metrics ({', '.join(sorted(metrics))}): compare like with like."
        )
    losses = [loss for _, loss, _, _ in found]
    settings = [
        Setting(loss if losses.count(loss) == 1 else f"{loss} ({folder.name})", rows, curves)
        for folder, loss, rows, curves in found
    ]
    return settings, metrics.pop()


def first_reaching(curve: Sequence[tuple], score: float) -> Optional[tuple]:
    """``(epochs trained, cumulative training seconds)`` at the first validation of ``curve`` at or above ``score``;
    None if never."""
    return next(((epoch + 1, seconds) for epoch, seconds, value in curve if value >= score), None)


def summary(
    settings: Sequence[Setting], metric: str, target: Optional[str] = None, test_metric: str = VALIDATION_METRIC
) -> str:
    """Markdown: the per-setting table, then each setting's seconds to the target's best validation score."""
    header = [
        "setting",
        "seeds",
        "best epoch",
        f"test {test_metric}",
        f"best val {metric}",
        "s to best val",
        "s / epoch",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in settings:
        seeds = sorted(s.curves)
        tests = [float(r[test_metric]) for r in s.rows if r.get(test_metric, "") != ""]
        cells = [
            s.label, str(len(seeds)), ", ".join(str(s.best(seed)[0]) for seed in seeds), mean_and_spread(tests) if tests else "",
            mean_and_spread([s.best(seed)[2] for seed in seeds]), f"{statistics.mean(s.best(seed)[1] for seed in seeds):.0f}",
            f"{statistics.mean(float(r['seconds_per_epoch']) for r in s.rows if r.get('seconds_per_epoch', '') != ''):.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    by_label = {s.label: s for s in settings}
    if target is None:
        target = max(
            by_label,
            key=lambda label: statistics.mean(by_label[label].best(seed)[2] for seed in by_label[label].curves),
        )
    if target not in by_label:
        raise ValueError(f"--target {target!r} is not one of the settings: {', '.join(by_label)}.")
    goal = by_label[target]
    # Epochs as well as seconds: the epoch count does not drift with the machine's load, so settings run in different
    # sessions still compare (at the seconds per epoch measured side by side, benchmarks/mean_step_cost.py).
    lines += [
        "",
        f"Training seconds (and epochs) to reach {target}'s best validation {metric} of the same seed (never: not reached):",
        "",
    ]
    lines += [
        "| setting | " + " | ".join(f"seed {seed}" for seed in sorted(goal.curves)) + " |",
        "|" + "---|" * (len(goal.curves) + 1),
    ]
    for s in settings:
        cells = []
        for seed in sorted(goal.curves):
            reached = first_reaching(s.curves[seed], goal.best(seed)[2]) if seed in s.curves else None
            cells.append(
                "" if seed not in s.curves else ("never" if reached is None else f"{reached[1]:.0f} ({reached[0]} ep)")
            )
        lines.append(f"| {s.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="benchmark folders (benchmarks/benchmark.py --out)")
    parser.add_argument("--out", type=Path, required=True, help="the figure to write (PNG)")
    parser.add_argument(
        "--target", help="the setting whose best validation score the others race to (default: the best)"
    )
    parser.add_argument("--test-metric", default=VALIDATION_METRIC, help="the test column of the table")
    args = parser.parse_args(argv)
    try:
        settings, metric = load_settings(args.folders)
        print(summary(settings, metric, args.target, args.test_metric))
    except ValueError as error:
        print(f"time_to_accuracy.py: {error}", file=sys.stderr)
        return 2
    curves = {s.label: [s.curves[seed] for seed in sorted(s.curves)] for s in settings}
    print(f"wrote {plot_time_to_accuracy(curves, args.out, metric)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

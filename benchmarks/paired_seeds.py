"""Two settings compared seed by seed: the per-seed difference of a metric, its mean and 95% interval.

Runs of the same seed share their initialisation, data order and validation split, so the per-seed difference
cancels much of the seed-to-seed spread that two independent means carry. Reads the ``final`` rows of two loss
benchmark CSVs (benchmarks/benchmark.py, benchmarks/vmf_mean_update.py), or two losses of one CSV, pairs them by seed and
prints one Markdown table: each seed's values and difference, then the mean difference with its Student-t 95%
interval and a verdict (A ahead, B ahead, or not resolved by these seeds).

    python benchmarks/paired_seeds.py benchmarks/results/fm_cls/vmf/runs.csv benchmarks/results/fm_cls/softmax/runs.csv \\
        --metric classifier_accuracy
    python benchmarks/paired_seeds.py benchmarks/results/emoji_pretrained/runs.csv --loss-a vmf --loss-b multi_similarity
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scipy import stats

from pml_vmf.files import read_rows


@dataclass(frozen=True)
class PairedDifference:
    """The per-seed comparison of setting A against setting B.

    Attributes:
        seeds: the seeds both settings ran, sorted.
        a, b: each setting's metric, per seed.
        mean: the mean of ``a - b`` over the seeds.
        low, high: its two-sided 95% Student-t interval (NaN with one seed).
    """

    seeds: tuple
    a: tuple
    b: tuple
    mean: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``A ahead`` or ``B ahead`` when the interval excludes 0, else ``not resolved``."""
        if self.low > 0:
            return "A ahead"
        if self.high < 0:
            return "B ahead"
        return "not resolved"


def paired_difference(a: dict, b: dict, confidence: float = 0.95) -> PairedDifference:
    """Pairs ``{seed: value}`` of two settings and returns their differences' mean and Student-t interval.

    Raises:
        ValueError: when the settings share no seed.
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError(
            f"The two settings share no seed (A: {sorted(a)}, B: {sorted(b)}): pair runs of the same seeds."
        )
    differences = [a[s] - b[s] for s in seeds]
    mean = statistics.mean(differences)
    if len(seeds) < 2:
        low = high = math.nan
    else:
        half = stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1) * statistics.stdev(differences) / math.sqrt(len(seeds))
        low, high = mean - half, mean + half
    return PairedDifference(seeds, tuple(a[s] for s in seeds), tuple(b[s] for s in seeds), mean, low, high)


def values_by_seed(rows: Sequence[dict], metric: str, loss: Optional[str] = None) -> dict:
    """``{seed: metric}`` of the ``final`` rows of one loss (the only one there, when ``loss`` is None).

    Raises:
        ValueError: naming the choices when the loss is ambiguous or absent, or a seed has two final rows.
    """
    final = [r for r in rows if r.get("phase") == "final"]
    losses = sorted({r["loss"] for r in final})
    if loss is None:
        if len(losses) != 1:
            raise ValueError(
                f"The CSV has final runs of {len(losses)} losses ({', '.join(losses) or 'none'}): name one with --loss-a/--loss-b."
            )
        loss = losses[0]
    mine = [r for r in final if r["loss"] == loss]
    if not mine:
        raise ValueError(f"No final run of loss {loss!r}; the CSV has {', '.join(losses) or 'none'}.")
    values: dict = {}
    for row in mine:
        seed = int(row["seed"])
        if seed in values:
            raise ValueError(
                f"Seed {seed} of {loss} has two final rows (two tuned values?): compare CSVs of one setting."
            )
        if row.get(metric, "") == "":
            raise ValueError(
                f"Run {row['name']} has no {metric!r}; its columns: {', '.join(k for k, v in row.items() if v != '')}."
            )
        values[seed] = float(row[metric])
    return values


def markdown(result: PairedDifference, metric: str, names: tuple, digits: int = 4) -> str:
    """The comparison as a Markdown table, one line per seed, then the mean difference and the verdict."""
    lines = [f"| seed | {names[0]} | {names[1]} | A - B |", "|---:|---:|---:|---:|"]
    for seed, a, b in zip(result.seeds, result.a, result.b):
        lines.append(f"| {seed} | {a:.{digits}f} | {b:.{digits}f} | {a - b:+.{digits}f} |")
    interval = "n/a (one seed)" if math.isnan(result.low) else f"[{result.low:+.{digits}f}, {result.high:+.{digits}f}]"
    lines.append(
        f"\n{metric}, A - B over {len(result.seeds)} seeds: mean {result.mean:+.{digits}f}, 95% interval {interval}: {result.verdict}."
    )
    return "\n".join(lines) + "\n"


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv_a", type=Path, help="setting A's runs.csv")
    parser.add_argument(
        "csv_b", type=Path, nargs="?", help="setting B's runs.csv (default: the same CSV, another loss)"
    )
    parser.add_argument(
        "--metric", default="mean_average_precision_at_r", help="a runs.csv column (test metrics, best_val_score, ...)"
    )
    parser.add_argument("--loss-a", help="A's loss, where its CSV holds several")
    parser.add_argument("--loss-b", help="B's loss, where its CSV holds several")
    args = parser.parse_args(argv)
    try:
        for path in (args.csv_a, args.csv_b):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} does not exist: pass the runs.csv a benchmark wrote.")
        rows_a = read_rows(args.csv_a)
        rows_b = read_rows(args.csv_b) if args.csv_b is not None else rows_a
        a = values_by_seed(rows_a, args.metric, args.loss_a)
        b = values_by_seed(rows_b, args.metric, args.loss_b)
        result = paired_difference(a, b)
    except ValueError as error:
        print(f"paired_seeds.py: {error}", file=sys.stderr)
        return 2
    name_a = f"A: {args.loss_a or ''} {args.csv_a.parent.name}".replace("  ", " ")
    name_b = f"B: {args.loss_b or ''} {(args.csv_b or args.csv_a).parent.name}".replace("  ", " ")
    print(markdown(result, args.metric, (name_a, name_b)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark losses on one recipe config: ``accelerate launch benchmarks/benchmark.py --config C --out DIR [...]``.

Each loss in --losses is trained with every seed in --seeds, under the same config (backbone, embedding width,
sampler, batch, optimizer, epochs, data); each with its usual miner and its own parameter learning rate. A loss named
in --tune first trains once per candidate value with the first seed (``--tune default``: every loss's main
hyper-parameter at its default and one step either side), and the value with the best validation score (the
config's eval.select_by, MAP@R by default; held-out training data, never the test data) is used for every seed. The network before training (train.epochs=0) is
evaluated first, the same way, as the table's first row; a loss that does not clear it is flagged. Writes DIR/runs.csv (one row per run),
DIR/summary.md (mean ± std per loss, the tuned values), DIR/validation_curves.csv (every run's validation score per
epoch, with cumulative training seconds) and DIR/plots/ (among them time_to_accuracy.png: the validation score against
cumulative training seconds). A rerun skips finished runs. Config overrides
for every run go after --set.

    accelerate launch benchmarks/benchmark.py --config recipes/configs/emoji.yaml --data-root data/emoji \\
        --losses vmf triplet normalized_softmax --seeds 0 1 2 --tune vmf.kappa=8,16,32 --out benchmarks/results/emoji

    accelerate launch benchmarks/benchmark.py --config C --out DIR \\
        --losses vmf triplet contrastive multi_similarity proxy_anchor normalized_softmax arcface --tune default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate import PartialState
from benchmark_plots import plot_benchmark, plot_time_to_accuracy, plot_tuning_curves  # benchmarks/, beside this script
from loss_benchmark import (
    final_rows,
    headline_metrics,
    parse_grid,
    plan,
    reuse_winning_tuning_runs,
    run_one,
    summary_table,
    validation_curve_rows,
)  # fmt: skip

from pml_vmf.files import atomic_write_text, read_rows, write_rows
from pml_vmf.training import LOSSES, ConfigError, TrainingInterrupted, load_config
from pml_vmf.training.builders import multiprocess_without_cuda


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root")
    parser.add_argument(
        "--out", type=Path, required=True, help="the benchmark folder (runs/, runs.csv, summary.md, plots/)"
    )
    parser.add_argument("--losses", nargs="+", default=["vmf", "triplet", "normalized_softmax"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--tune",
        nargs="*",
        default=[],
        metavar="LOSS.PARAM=V1,V2",
        help="e.g. vmf.kappa=8,16,32; default: each loss's grid (loss_benchmark.TUNING_GRIDS)",
    )
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the untrained network's row (train.epochs=0), trained losses are compared with",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every run, e.g. --set train.epochs=10 data.image_size=64",
    )
    args = parser.parse_args(argv)
    try:
        unknown = [loss for loss in args.losses if loss not in LOSSES]
        if unknown:
            raise ConfigError(f"Unknown loss {', '.join(unknown)}: --losses takes {', '.join(LOSSES)}.")
        grid = parse_grid(args.tune, args.losses)
        overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
        csv_path, runs_dir = args.out / "runs.csv", args.out / "runs"
        select_by = load_config(args.config, overrides).eval.select_by
        state = PartialState(cpu=multiprocess_without_cuda())
        while True:
            rows = read_rows(csv_path)
            copies = reuse_winning_tuning_runs(rows, grid, args.seeds[0])
            if copies and state.is_main_process:
                write_rows(csv_path, rows + copies)
            state.wait_for_everyone()  # every process plans from the same CSV
            rows += copies
            todo = plan(args.losses, args.seeds, grid, rows, args.baseline)
            if not todo:
                break
            row = run_one(args.config, overrides, todo[0], runs_dir)
            if row:  # only the main process gets a row; read again: another benchmark may share the folder
                finished = [*read_rows(csv_path), row]
                write_rows(csv_path, finished)
                write_validation_curves(args.out, finished, select_by)  # kept if a later run is stopped
            state.wait_for_everyone()
        state.destroy_process_group()
    except TrainingInterrupted as stop:  # preempted: rerun the same command to continue where it stopped
        print(f"benchmark.py: {stop} Or rerun this benchmark command: it resumes that run.", file=sys.stderr)
        return stop.exit_code
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"benchmark.py: {error}", file=sys.stderr)
        return 2
    rows = read_rows(csv_path)
    final = final_rows(rows, grid)
    if final:
        atomic_write_text(args.out / "summary.md", summary_table(rows, grid))
        curve_rows = write_validation_curves(args.out, rows, select_by)
        curves = {}
        for row in final:
            points = [(c["epoch"], c["train_seconds"], c["value"]) for c in curve_rows if c["name"] == row["name"]]
            curves.setdefault(row["loss"], []).append(points)
        plot_benchmark(final, curves, args.out / "plots", headline_metrics(final)[:3], select_by)
        plot_time_to_accuracy(curves, args.out / "plots" / "time_to_accuracy.png", select_by)
        plot_tuning_curves(rows, grid, args.out / "plots")
        print((args.out / "summary.md").read_text())
    return 0


def write_validation_curves(out: Path, rows: list, select_by: str) -> list:
    """Writes ``out/validation_curves.csv`` from the finished runs' logs (each read once) and returns its rows."""
    curves_csv = out / "validation_curves.csv"
    curve_rows = validation_curve_rows(rows, out / "runs", select_by, previous=read_rows(curves_csv))
    write_rows(curves_csv, curve_rows)
    return curve_rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

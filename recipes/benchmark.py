"""Benchmark losses on one recipe config: ``accelerate launch recipes/benchmark.py --config C --out DIR [...]``.

Each loss in --losses is trained with every seed in --seeds, under the same config (backbone, embedding width,
sampler, batch, optimizer, epochs, data); each with its usual miner and its own parameter learning rate. A loss named
in --tune first trains once per candidate value with the first seed (``--tune default``: every loss's main
hyper-parameter at its default and one step either side), and the value with the best validation MAP@R (held-out
training classes, never the test classes) is used for every seed. The network before training (train.epochs=0) is
evaluated first, the same way, as the table's first row; a loss that does not clear it is flagged. Writes DIR/runs.csv (one row per run),
DIR/summary.md (mean ± std per loss, the tuned values) and DIR/plots/. A rerun skips finished runs. Config overrides
for every run go after --set.

    accelerate launch recipes/benchmark.py --config recipes/configs/emoji.yaml --data-root data/emoji \\
        --losses vmf triplet normalized_softmax --seeds 0 1 2 --tune vmf.kappa=8,16,32 --out benchmarks/results/emoji

    accelerate launch recipes/benchmark.py --config C --out DIR \\
        --losses vmf triplet contrastive multi_similarity proxy_anchor normalized_softmax arcface --tune default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate import PartialState

from pml_vmf.evaluation import plot_benchmark, plot_tuning_curves
from pml_vmf.training import LOSSES, ConfigError, TrainingInterrupted
from pml_vmf.training.builders import multiprocess_without_cuda
from pml_vmf.training.loss_benchmark import (
    BASELINE_NAME,
    PlannedRun,
    final_rows,
    headline_metrics,
    parse_grid,
    read_rows,
    run_one,
    summary_table,
    winners,
    write_rows,
)
from pml_vmf.files import atomic_write_text
from pml_vmf.training.run_folder import RunFolder


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
                todo += [PlannedRun(final_name(loss, s, param, chosen[loss]), "final", loss, s, param, chosen[loss]) for s in seeds]
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


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--out", type=Path, required=True, help="the benchmark folder (runs/, runs.csv, summary.md, plots/)")
    parser.add_argument("--losses", nargs="+", default=["vmf", "triplet", "normalized_softmax"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tune", nargs="*", default=[], metavar="LOSS.PARAM=V1,V2", help="e.g. vmf.kappa=8,16,32; default: each loss's registry grid (LossSpec.tuning)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the untrained network's row (train.epochs=0), trained losses are compared with")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run, e.g. --set train.epochs=10 data.image_size=64")
    args = parser.parse_args(argv)
    try:
        unknown = [loss for loss in args.losses if loss not in LOSSES]
        if unknown:
            raise ConfigError(f"Unknown loss {', '.join(unknown)}: --losses takes {', '.join(LOSSES)}.")
        grid = parse_grid(args.tune, args.losses)
        overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
        csv_path, runs_dir = args.out / "runs.csv", args.out / "runs"
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
            if row:  # only the main process gets a row
                write_rows(csv_path, [*rows, row])
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
        curves = {}
        for row in final:
            log = RunFolder(runs_dir / row["folder"]).read_metrics_log()
            curve = [(r["epoch"], r["mean_average_precision_at_r"]) for r in log if r.get("split") == "val"]
            curves.setdefault(row["loss"], []).append(curve)
        plot_benchmark(final, curves, args.out / "plots", headline_metrics(final)[:3])
        plot_tuning_curves(rows, grid, args.out / "plots")
        print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""vMF ablation: how, and how often, the class means are updated, on any recipe config.

Trains ``loss.name=vmf`` through the recipe (same data, backbone, sampler, seed) once per mean-update variant and seed,
and writes ``<out>/runs.csv`` (one row per run: test metrics, best validation MAP@R, training seconds, which include
the mean updates, and peak memory) and ``<out>/summary.md`` (mean +- std per variant). Finished runs are skipped on a
rerun, so an interrupted sweep resumes.

    python benchmarks/vmf_mean_update.py --config recipes/configs/emoji.yaml --data-root data/emoji \\
        --out benchmarks/results/emoji_vmf_mean_update --set data.image_size=48 train.epochs=8 loss.params.vmf.kappa=32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loss_benchmark import PlannedRun, mean_and_spread, run_one  # benchmarks/, beside this script

from pml_vmf.files import atomic_write_text, read_rows, write_rows

STEP = "loss.means.publish_every"
NO_PASSES = "loss.means.full_pass_every=null"  # every variant sets the whole schedule, whatever the config's own passes
MINER = "loss.means.source=miner"
VARIANTS = {
    "every_3_steps": [MINER, NO_PASSES, f"{STEP}=3"],
    "every_10_steps": [MINER, NO_PASSES, f"{STEP}=10"],
    "every_50_steps": [MINER, NO_PASSES, f"{STEP}=50"],
    "per_epoch": [MINER, NO_PASSES, f"{STEP}=null"],  # accumulate over the epoch, publish at its end
    "every_10_steps_momentum_0.5": [MINER, NO_PASSES, f"{STEP}=10", "loss.means.momentum=0.5"],
    "full_pass": ["loss.means.source=full_pass", NO_PASSES],  # exact means after each epoch, no miner
}
COLUMNS = ("mean_average_precision_at_r", "recall_at_1", "best_val_map_at_r", "seconds_per_epoch", "peak_memory_mb")


def summary_table(rows: list) -> str:
    """Markdown: mean +- std over seeds per variant."""
    lines = ["| variant | seeds | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cells = [variant, str(len(mine))]
        for column in COLUMNS:
            values = [float(r[column]) for r in mine if r.get(column, "") != ""]
            digits = 1 if column in ("seconds_per_epoch", "peak_memory_mb") else 3
            cells.append(mean_and_spread(values, digits) if values else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run"
    )
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    csv_path = args.out / "runs.csv"
    for variant in args.variants:
        for seed in args.seeds:
            rows = read_rows(csv_path)
            name = f"{variant}-seed{seed}"
            if any(r["name"] == name for r in rows):
                continue
            row = run_one(
                args.config, [*overrides, *VARIANTS[variant]], PlannedRun(name, "final", "vmf", seed), args.out / "runs"
            )
            write_rows(csv_path, [*rows, {"variant": variant, **row}])
    rows = read_rows(csv_path)  # the summary covers every run in the folder, e.g. one variant with more seeds
    atomic_write_text(args.out / "summary.md", summary_table(rows))
    print(summary_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

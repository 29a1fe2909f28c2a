"""Evaluate a trained run's best checkpoint on data of your choice, without training.

    python recipes/evaluate.py --run runs/fashion-mnist-vmf --data-root /data/fashion-mnist
    accelerate launch recipes/evaluate.py --run runs/cub-vmf --data-root /mnt/CUB_200_2011 eval.recall_at=[1,2,4,8,16]

The run's own config is used with the data root and any ``data.*`` / ``eval.*`` overrides, so the split, the eval
transform and the metrics are the run's; the scoring is the run's own test (PML's ``AccuracyCalculator``, and the
closed-set accuracies where the protocol has them). Writes ``metrics.json`` and ``plots/retrieval_grid.png`` into
``--out`` (default ``<run>/evaluations/<data root's name>``), a new folder: nothing of the run is changed. The data
must follow the run's protocol with the same training classes (their count sizes the saved class means).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pml_vmf.training.config import describe_keys  # no torch: --help answers at once

EVALUATION_SECTIONS = ("data.", "eval.", "run.mixed_precision=")


def parse_args(argv: list) -> argparse.Namespace:
    keys = [line for line in describe_keys() if line.startswith(("data.", "eval."))]
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="keys it takes (KEY=VALUE):\n  " + "\n  ".join(keys),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="the run folder, <run.output_dir>/<run.name>")
    parser.add_argument("--data-root", help="the dataset folder (sets data.root); default: the run's own")
    parser.add_argument(
        "--out", type=Path, help="a new folder for metrics.json and plots/ (default <run>/evaluations/<name>)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="data.* and eval.* overrides, e.g. eval.knn=torch"
    )
    return parser.parse_intermixed_args(argv)  # overrides may sit before or after the options


def fail(message: str, exit_code: int = 2) -> int:
    if os.environ.get("RANK", "0") == "0":
        print(f"evaluate.py: {message}", file=sys.stderr)
    return exit_code


def main(argv: list) -> int:
    args = parse_args(argv)
    run_dir: Path = args.run
    if not (run_dir / "config.yaml").is_file():
        return fail(f"--run {run_dir}: no run there (no config.yaml); pass a run folder, <run.output_dir>/<run.name>.")
    other = [o for o in args.overrides if not o.startswith(EVALUATION_SECTIONS)]
    if other:
        return fail(
            f"{', '.join(other)}: only data.*, eval.* and run.mixed_precision can change for an evaluation; the model is the run's."
        )
    name = Path(args.data_root).resolve().name if args.data_root else "own-data"
    out = args.out or run_dir / "evaluations" / name
    if out.exists():
        return fail(f"{out} already exists: pass another --out (an evaluation never replaces files).")
    overrides = [*args.overrides, f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}"]
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")

    from pml_vmf.training import RecipeRun, load_config

    try:
        run = RecipeRun(load_config(run_dir / "config.yaml", overrides, saved=True), resume=True, evaluation_only=True)
        metrics = run.evaluate_best(out)
    except (ValueError, FileNotFoundError) as error:  # config, dataset, checkpoint: one line that says what to fix
        return fail(str(error))
    if metrics:
        width = max(len(k) for k in metrics)
        print(f"\nMetrics of {run_dir} on {args.data_root or 'its own data'} ({out / 'metrics.json'}):")
        for key, value in metrics.items():
            print(f"  {key:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    run.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

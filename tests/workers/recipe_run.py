"""Trains with RecipeRun on every process started, then saves each rank's model and loss state for comparison.

Usage: recipe_run.py CONFIG OUT_DIR [KEY=VALUE ...]; writes OUT_DIR/rank<r>.pt.
"""

import sys
from pathlib import Path

import torch

from pml_vmf.training import RecipeRun, load_config


def main() -> None:
    config_path, out_dir, *overrides = sys.argv[1:]
    run = RecipeRun(load_config(config_path, [f"run.output_dir={out_dir}", *overrides]))
    initial = {k: v.detach().cpu().clone() for k, v in run.unwrapped_model.state_dict().items()}
    metrics = run.fit()
    rank = run.accelerator.process_index
    torch.save(
        {
            "model": {k: v.cpu() for k, v in run.unwrapped_model.state_dict().items()},
            "initial": initial,
            "loss": {k: v.cpu() for k, v in run.loss.loss.state_dict().items()},
            "metrics": metrics,
            "world_size": run.accelerator.num_processes,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main()

"""recipes/train.py with one thing done to the training step at a given global step, for the tests of stopping.

Usage: train_with_hook.py MODE GLOBAL_STEP MARKER_FILE [train.py arguments ...]

* pause: after that step, write MARKER_FILE and wait (at most 120 s) until a stop signal arrives from outside;
  on several processes only rank 0 waits, the others wait for it in the next step's reduction.
* nan: poison that step's images with NaN, so that its loss is not finite.
* valueerror: raise a ValueError in that step, as a bug in the training code would.
"""

import importlib.util
import sys
import time
from pathlib import Path

import torch

from pml_vmf.training import RecipeRun

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    mode, step, marker, *train_args = sys.argv[1:]
    step = int(step)
    original = RecipeRun.train_step

    def hooked(run: RecipeRun, images: torch.Tensor, labels: torch.Tensor) -> float:
        at_step = run.progress.global_step + 1 == step
        if at_step and mode == "nan":
            images = images * float("nan")
        if at_step and mode == "valueerror":
            raise ValueError("a bug in the training step")
        loss = original(run, images, labels)
        if at_step and mode == "pause" and run.accelerator.is_main_process:
            Path(marker).write_text(str(step))
            deadline = time.monotonic() + 120
            while run.stop_signals.received is None and time.monotonic() < deadline:
                time.sleep(0.05)
        return loss

    RecipeRun.train_step = hooked
    spec = importlib.util.spec_from_file_location("train", REPO / "recipes" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train.main(train_args)


if __name__ == "__main__":
    sys.exit(main())

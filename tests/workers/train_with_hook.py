"""recipes/train.py with one thing done to the training step at a given global step, for the tests of stopping.

Usage: train_with_hook.py MODE GLOBAL_STEP MARKER_FILE [train.py arguments ...]

* pause: after that step, write MARKER_FILE and wait (at most 120 s) until a stop signal arrives from outside;
  on several processes only rank 0 waits, the others wait for it in the next step's reduction.
* nan: after the step before it, fill the network's weights with NaN, so that that step's loss is not finite.
* valueerror: raise a ValueError after that step, as a bug in the training code would.
"""

import importlib.util
import sys
import time
from pathlib import Path

import torch

from pml_vmf.training import RecipeRun, RunHook

REPO = Path(__file__).resolve().parents[2]


class StepHook(RunHook):
    def __init__(self, mode: str, step: int, marker: str) -> None:
        self.mode, self.step, self.marker = mode, step, marker

    def on_step_end(self, run: RecipeRun, loss: float) -> None:
        done = run.progress.global_step  # the step just taken
        if self.mode == "nan" and done + 1 == self.step:
            with torch.no_grad():
                for parameter in run.unwrapped_model.parameters():
                    parameter.fill_(float("nan"))
        if self.mode == "valueerror" and done == self.step:
            raise ValueError("a bug in the training step")
        if self.mode == "pause" and done == self.step and run.accelerator.is_main_process:
            Path(self.marker).write_text(str(self.step))
            deadline = time.monotonic() + 120
            while run.stop_signals.received is None and time.monotonic() < deadline:
                time.sleep(0.05)


def main() -> int:
    mode, step, marker, *train_args = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("train", REPO / "recipes" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train.main(train_args, hooks=[StepHook(mode, int(step), marker)])


if __name__ == "__main__":
    sys.exit(main())

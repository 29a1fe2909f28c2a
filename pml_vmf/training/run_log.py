"""What a run records as it goes: its log files, the accelerate trackers, and a printed line per epoch."""

from __future__ import annotations

from accelerate import Accelerator

from .config import RecipeConfig
from .run_folder import RunFolder


class RunLog:
    """Writes every step to ``train_steps.jsonl`` and every epoch to ``metrics.jsonl`` (main process), sends both to
    the config's trackers (``run.trackers``) on the global-step axis, and prints one line per epoch.

    Args:
        accelerator: the run's accelerator.
        folder: the run folder.
        config: the run's config.
    """

    def __init__(self, accelerator: Accelerator, folder: RunFolder, config: RecipeConfig) -> None:
        self.accelerator, self.folder = accelerator, folder
        self.tracked = bool(config.run.trackers)
        if self.tracked:
            accelerator.init_trackers(config.run.name, config=_flat(config.to_dict()))

    def step(self, epoch: int, step: int, global_step: int, loss: float, lrs: list) -> None:
        """One optimisation step: its loss (averaged over processes) and the learning rate of every group."""
        if self.accelerator.is_main_process:
            self.folder.append_step({"epoch": epoch, "step": step, "global_step": global_step, "loss": loss, "lr": lrs})
        if self.tracked:
            self.accelerator.log({"train/loss": loss, "train/lr": lrs[0], "train/lr_head": lrs[1]}, step=global_step)

    def epoch(self, record: dict, trained: dict, validation: dict, global_step: int) -> None:
        """One epoch: ``record`` (training and validation, as ``metrics.jsonl`` holds it) and, for the trackers,
        the training values under ``epoch/`` (``vmf/*`` as they are) and the validation metrics under ``val/``."""
        if self.accelerator.is_main_process:
            self.folder.append_metrics(record)
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
            self.accelerator.print(" ".join(f"{k}={v}" for k, v in shown.items()))
        if self.tracked:  # at the global step, as the per-step values: one time axis for every tracker
            values = {("" if "/" in k else "epoch/") + k: v for k, v in trained.items()}
            values.update({f"val/{k}": v for k, v in validation.items() if isinstance(v, (int, float))})
            self.accelerator.log({"epoch": record["epoch"], **values}, step=global_step)

    def finish(self) -> None:
        """Closes the trackers. Unlike ``accelerator.end_training`` it keeps the process group, which belongs to
        the script: a benchmark trains several runs in one group; recipes/train.py ends it."""
        for tracker in self.accelerator.trackers:
            tracker.finish()


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat

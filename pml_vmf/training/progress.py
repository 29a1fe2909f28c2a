"""Where a run stands: epoch, step and the best validation score, checkpointed with it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class TrainingProgress:
    """Where a run stands, checkpointed with it so that a resumed run continues exactly, mid-epoch included.

    Attributes:
        epoch: the epoch being trained (the next one, between epochs).
        step: the steps of ``epoch`` already taken.
        global_step: the steps taken since the start.
        loss_sum, loss_steps: the running sum of this epoch's training loss and its number of steps.
        best_score, best_epoch: the best validation score so far and its epoch.
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    loss_steps: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step, self.loss_sum, self.loss_steps = epoch, 0, 0.0, 0

    def count_step(self, loss: float) -> None:
        self.step += 1
        self.global_step += 1
        self.loss_sum += loss
        self.loss_steps += 1

    def epochs_without_improvement(self, epoch: int) -> int:
        """Epochs trained since the best validation score, before training ``epoch`` (0 before any score).
        Counted before an epoch rather than after one, so that resuming an early-stopped run does not train on."""
        return 0 if self.best_epoch < 0 else epoch - 1 - self.best_epoch

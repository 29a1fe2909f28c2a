"""Code a user runs inside a training run without editing the engine, as PML trainers' end-of-iteration and
end-of-epoch hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import RecipeRun


class RunHook:
    """Subclass and override what you need; pass instances as ``RecipeRun(config, hooks=[...])`` (or
    ``recipes/train.py``'s ``main(argv, hooks=[...])``). Every process calls them."""

    def on_step_end(self, run: RecipeRun, loss: float) -> None:
        """After each optimisation step, with the step's loss averaged over processes (``run.progress`` counts it)."""

    def on_epoch_end(self, run: RecipeRun, record: dict) -> None:
        """After each epoch's training and validation, before its checkpoint, with its ``metrics.jsonl`` record
        (the training values on every process; the validation metrics on the main process only)."""

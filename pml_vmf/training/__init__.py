"""The pieces recipes/train.py is made of: config, loss registry, checkpoints and the training engine (the model is
:mod:`pml_vmf.models`, shared with inference)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import ConfigError, RecipeConfig, load_config, save_config

# The training stack is imported on first use (PEP 562): the config alone (a script's --help) loads no torch.
_EXPORTS = {
    "RecipeRun": ".engine",
    "RunHook": ".engine",
    "NonFiniteLossError": ".interruptions",
    "TrainingInterrupted": ".interruptions",
    "LOSSES": ".losses",
    "TrainingLoss": ".losses",
    "build_training_loss": ".losses",
    "SoftmaxLoss": ".softmax_loss",
}

if TYPE_CHECKING:
    from .engine import RecipeRun, RunHook
    from .interruptions import NonFiniteLossError, TrainingInterrupted
    from .losses import LOSSES, TrainingLoss, build_training_loss
    from .softmax_loss import SoftmaxLoss


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "LOSSES",
    "NonFiniteLossError",
    "RecipeConfig",
    "RecipeRun",
    "RunHook",
    "SoftmaxLoss",
    "TrainingInterrupted",
    "TrainingLoss",
    "build_training_loss",
    "load_config",
    "save_config",
]

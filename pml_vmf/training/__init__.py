"""The pieces recipes/train.py is made of: config, loss registry, checkpoints and the training engine (the model is
:mod:`pml_vmf.models`, shared with inference)."""

from .config import ConfigError, RecipeConfig, load_config, save_config
from .engine import RecipeRun
from .hooks import RunHook
from .interruptions import NonFiniteLossError, TrainingInterrupted
from .losses import LOSSES, TrainingLoss, build_training_loss
from .softmax_loss import SoftmaxLoss

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

"""The pieces recipes/train.py is made of: config, model, loss registry, checkpoints and the training engine."""

from .config import ConfigError, RecipeConfig, load_config, save_config
from .engine import RecipeRun
from .export import load_embedding_model
from .interruptions import NonFiniteLossError, TrainingInterrupted
from .losses import LOSSES, TrainingLoss, build_training_loss
from .model import EmbeddingModel, create_embedding_model
from .small_cnn import SmallCNN  # importing it registers timm model "small_cnn"
from .softmax_loss import SoftmaxLoss

__all__ = [
    "ConfigError",
    "EmbeddingModel",
    "LOSSES",
    "NonFiniteLossError",
    "RecipeConfig",
    "RecipeRun",
    "SmallCNN",
    "SoftmaxLoss",
    "TrainingInterrupted",
    "TrainingLoss",
    "build_training_loss",
    "create_embedding_model",
    "load_config",
    "load_embedding_model",
    "save_config",
]

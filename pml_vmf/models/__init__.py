"""The embedding model and its file format, shared by training (which writes it) and inference (which reads it)."""

from .embedding_model import EmbeddingModel, create_embedding_model
from .model_folder import (
    CONFIG_FILE,
    MEANS_FILE,
    WEIGHTS_FILE,
    EmbedderConfig,
    ModelNotFoundError,
    model_fingerprint,
    read_class_statistics,
    read_model_folder,
    save_model_folder,
    write_model_files,
)
from .small_cnn import SmallCNN  # importing it registers timm model "small_cnn"

__all__ = [
    "CONFIG_FILE",
    "MEANS_FILE",
    "WEIGHTS_FILE",
    "EmbedderConfig",
    "EmbeddingModel",
    "ModelNotFoundError",
    "SmallCNN",
    "create_embedding_model",
    "model_fingerprint",
    "read_class_statistics",
    "read_model_folder",
    "save_model_folder",
    "write_model_files",
]

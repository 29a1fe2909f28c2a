"""The trained model of a run as a model folder, ``runs/<name>/model/``: the format exports and inference read."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..data import eval_transform_settings
from ..models import EmbedderConfig, EmbeddingModel, save_model_folder
from .config import RecipeConfig


def save_run_model(
    folder: Path,
    config: RecipeConfig,
    model: EmbeddingModel,
    class_means: Optional[torch.Tensor] = None,
    *,
    kappa: Optional[float] = None,
    class_names: Optional[list] = None,
    class_statistics: Optional[dict] = None,
) -> Path:
    """Writes the model folder :func:`pml_vmf.load_embedder` reads, atomically, replacing an earlier one (a resumed
        run tests again): the architecture, the weights, the eval transform's settings, the vMF means and kappa (None for
        other losses), each class's count and mean resultant length in the training set (``class_statistics``, for
    per-class concentrations) and the training classes' names (None where the dataset has none)."""
    card = EmbedderConfig(
        backbone=config.model.backbone,
        embedding_size=config.model.embedding_size,
        eval_transform=eval_transform_settings(
            model.backbone, config.data.image_size, mean=config.data.mean, std=config.data.std
        ),
        freeze_batchnorm=config.model.freeze_batchnorm,
        global_pool=config.model.global_pool,
        feature_layernorm=config.model.feature_layernorm,
        class_names=list(class_names) if class_names is not None else None,
        kappa=kappa,
        loss=config.loss.name,
    )
    return save_model_folder(folder, model, card, class_means, class_statistics, overwrite=True)

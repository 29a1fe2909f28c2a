"""The trained embedding model as one file, ``runs/<name>/embedding_model.pt``, and loading it back."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..data import eval_transform_settings
from .config import RecipeConfig
from .model import EmbeddingModel, create_embedding_model


def export_embedding_model(
    path: Path,
    config: RecipeConfig,
    model: EmbeddingModel,
    class_means: Optional[torch.Tensor] = None,
    *,
    kappa: Optional[float] = None,
    class_names: Optional[list] = None,
) -> Path:
    """Saves what :func:`load_embedding_model` and :func:`pml_vmf.load_embedder` need, atomically: the
    architecture's config, the weights, the eval transform's settings, the vMF means and kappa (None for other
    losses) and the training classes' names (None where the dataset has none)."""
    payload = {
        "eval_transform": eval_transform_settings(model.backbone, config.data.image_size, mean=config.data.mean, std=config.data.std),
        "kappa": kappa,
        "class_names": list(class_names) if class_names is not None else None,
        "loss": config.loss.name,
        "backbone": config.model.backbone,
        "embedding_size": config.model.embedding_size,
        "freeze_batchnorm": config.model.freeze_batchnorm,
        "global_pool": config.model.global_pool,
        "feature_layernorm": config.model.feature_layernorm,
        "image_size": config.data.image_size,
        "state_dict": model.state_dict(),
        "class_means": class_means.cpu() if class_means is not None else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_embedding_model(path: str | Path) -> EmbeddingModel:
    """Rebuilds the embedding model a run exported (``runs/<name>/embedding_model.pt``), in eval mode, on the CPU."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = create_embedding_model(
        payload["backbone"],
        payload["embedding_size"],
        freeze_batchnorm=payload["freeze_batchnorm"],
        global_pool=payload.get("global_pool"),  # absent from files exported before 0.2
        feature_layernorm=payload.get("feature_layernorm", False),
    )
    model.load_state_dict(payload["state_dict"])
    return model.eval()

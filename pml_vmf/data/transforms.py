"""Train and eval transforms from timm's data config for the backbone, with the DML protocol's augmentation."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from timm.data import create_transform, resolve_data_config


def build_transforms(
    model: torch.nn.Module,
    image_size: int,
    *,
    train_scale: tuple = (0.16, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> tuple:
    """The train and eval transforms for ``model``: its mean, std, interpolation and crop ratio, at ``image_size``.

    Train: random resized crop (area in ``train_scale``) and horizontal flip; eval: resize then center crop by the
    backbone's ``crop_pct`` (256 -> 224 for most ImageNet models). ``mean`` and ``std`` override the backbone's, for
    weights trained with other statistics than timm's config says.

    Returns:
        ``(train_transform, eval_transform)``.
    """
    data_config = resolve_data_config({"input_size": (3, image_size, image_size)}, model=model)
    common = dict(
        input_size=data_config["input_size"],
        interpolation=data_config["interpolation"],
        mean=tuple(mean) if mean is not None else data_config["mean"],
        std=tuple(std) if std is not None else data_config["std"],
    )
    train: Callable = create_transform(
        **common, is_training=True, scale=tuple(train_scale), hflip=hflip, color_jitter=color_jitter or None
    )
    evaluation: Callable = create_transform(**common, crop_pct=data_config["crop_pct"], crop_mode=data_config.get("crop_mode"))
    return train, evaluation

"""Train and eval transforms from timm's data config for the backbone, with the DML protocol's augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional

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
    settings = eval_transform_settings(model, image_size, mean=mean, std=std)
    common = {k: v for k, v in settings.items() if k not in ("crop_pct", "crop_mode")}
    train: Callable = create_transform(
        **common, is_training=True, scale=tuple(train_scale), hflip=hflip, color_jitter=color_jitter or None
    )
    return train, eval_transform_from_settings(settings)


def eval_transform_settings(
    model: torch.nn.Module,
    image_size: int,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> dict:
    """The eval transform as plain values (JSON-ready): timm's data config for ``model`` at ``image_size``, with
    ``mean`` and ``std`` overridden where given. :func:`eval_transform_from_settings` rebuilds the transform."""
    data_config = resolve_data_config({"input_size": (3, image_size, image_size)}, model=model)
    return {
        "input_size": [int(v) for v in data_config["input_size"]],
        "interpolation": str(data_config["interpolation"]),
        "mean": [float(v) for v in (mean if mean is not None else data_config["mean"])],
        "std": [float(v) for v in (std if std is not None else data_config["std"])],
        "crop_pct": float(data_config["crop_pct"]),
        "crop_mode": data_config.get("crop_mode"),
    }


def eval_transform_from_settings(settings: dict) -> Callable:
    """Resize, center crop, to tensor, normalise: the transform :func:`eval_transform_settings` describes."""
    return create_transform(
        input_size=tuple(settings["input_size"]),
        interpolation=settings["interpolation"],
        mean=tuple(settings["mean"]),
        std=tuple(settings["std"]),
        crop_pct=settings["crop_pct"],
        crop_mode=settings.get("crop_mode"),
    )

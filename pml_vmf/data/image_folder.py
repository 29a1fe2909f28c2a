"""A generic image-folder dataset: root/train/<class>/<image> and root/test/<class>/<image>, or one tree."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .dataset_files import DatasetNotFoundError
from .labelled_images import LabelledImages

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_class_tree(root: Path, class_names: Optional[list] = None) -> tuple:
    """Every image under ``root/<class>/``, labelled by the index of its class in sorted order.

    Returns:
        ``(images, class_names)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Image folder {root} does not exist: expected {root}/<class>/<image> files.")
    if class_names is None:
        class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}/<class>/.")
    return LabelledImages(paths, np.array(labels)), class_names


def read_image_folder(root: Path) -> dict:
    """``{"train": ..., "test": ...}`` from ``root/train`` and ``root/test`` when both exist, else ``{"all": ...}``.

    Class names index the labels: a class under both ``train`` and ``test`` gets the same label in both.
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        names = sorted({p.name for split in ("train", "test") for p in (root / split).iterdir() if p.is_dir()})
        return {split: read_class_tree(root / split, names)[0] for split in ("train", "test")}
    return {"all": read_class_tree(root)[0]}

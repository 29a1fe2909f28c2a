"""A generic image-folder dataset: root/train/<class>/<image> and root/test/<class>/<image>, or one tree.

Folders from the wild hold more than images. Files are found at any depth under a class folder, with extensions in
any case; whatever cannot be used is skipped with a warning that names it: files that are not images (by extension),
images whose header PIL cannot read, class folders with no usable image, files outside any class folder. An image
that is damaged past its header (a truncated JPEG) is reported by name when it is first loaded
(:class:`~pml_vmf.data.UnreadableImageError`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from .dataset_files import DatasetNotFoundError
from .labelled_images import LabelledImages

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHOWN = 5  # files named per warning


def image_header_error(path: Path) -> Optional[str]:
    """Why PIL cannot read ``path``'s header, or None when it can (``verify`` checks PNG chunks fully, JPEGs less)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for damaged files: UnidentifiedImageError, SyntaxError, ...
        return f"{type(error).__name__}: {error}"
    return None


def _warn_skipped(root: Path, what: str, paths: list) -> None:
    if not paths:
        return
    shown = "; ".join(str(p) for p in paths[:SHOWN]) + (
        f"; and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    )
    warnings.warn(f"Image folder {root}: skipped {len(paths)} {what}: {shown}", UserWarning, stacklevel=3)


def _scan_images(folder: Path, not_images: list, unreadable: list) -> list:
    """The readable images under ``folder`` at any depth, sorted; appends what it skips to the two lists."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            not_images.append(path)
        elif (reason := image_header_error(path)) is not None:
            unreadable.append(f"{path} ({reason})")
        else:
            found.append(path)
    return found


def _warn_unusable(root: Path, not_images: list, unreadable: list) -> None:
    _warn_skipped(root, f"file(s) without an image extension ({', '.join(IMAGE_EXTENSIONS)}, any case)", not_images)
    _warn_skipped(root, "image(s) PIL cannot read", unreadable)


def list_images(root: Path) -> list:
    """Every readable image under ``root``, at any depth, sorted by path; other files and images whose header PIL
    cannot read are skipped with a warning that names them.

    Raises:
        DatasetNotFoundError: when ``root`` is not a folder or holds no readable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Image folder {root} does not exist (or is not a folder).")
    not_images, unreadable = [], []
    paths = _scan_images(root, not_images, unreadable)
    _warn_unusable(root, not_images, unreadable)
    if not paths:
        raise DatasetNotFoundError(f"No readable images ({', '.join(IMAGE_EXTENSIONS)}, any case) found under {root}.")
    return paths


def read_class_tree(root: Path, class_names: Optional[list] = None) -> tuple:
    """Every readable image under ``root/<class>/`` (at any depth), labelled by the index of its class in
    ``class_names`` (default: the class folders in sorted order).

    Returns:
        ``(images, class_names)``; ``images.class_names`` is ``class_names``.

    Raises:
        DatasetNotFoundError: when ``root`` does not exist or holds no readable image in a class folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Image folder {root} does not exist: expected {root}/<class>/<image> files.")
    if class_names is None:
        class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    not_images, unreadable, empty, single = [], [], [], []
    for label, name in enumerate(class_names):
        found = _scan_images(root / name, not_images, unreadable)
        paths += found
        labels += [label] * len(found)
        if not found and (root / name).is_dir():
            empty.append(root / name)
        elif len(found) == 1:
            single.append(root / name)
    _warn_unusable(root, not_images, unreadable)
    _warn_skipped(root, "class folder(s) with no readable image", empty)
    _warn_skipped(
        root,
        "file(s) outside any class folder (expected root/<class>/<image>)",
        sorted(p for p in root.iterdir() if p.is_file()),
    )
    if single:
        shown = ", ".join(p.name for p in single[:SHOWN]) + (" ..." if len(single) > SHOWN else "")
        warnings.warn(
            f"Image folder {root}: {len(single)} class(es) have a single image ({shown}). Training draws it repeatedly "
            "for its m samples per class, and as a query it has no same-class result, so retrieval metrics leave it out.",
            UserWarning,
            stacklevel=2,
        )
    if not paths:
        raise DatasetNotFoundError(
            f"No readable images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}/<class>/: an image folder holds one "
            "sub-folder per class with its images inside."
        )
    return LabelledImages(paths, np.array(labels), list(class_names)), list(class_names)


def read_image_folder(root: Path) -> dict:
    """``{"train": ..., "test": ...}`` from ``root/train`` and ``root/test`` when both exist, else ``{"all": ...}``.

    Class names index the labels: a class under both ``train`` and ``test`` gets the same label in both.
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        names = sorted(
            {
                p.name
                for split in ("train", "test")
                for p in (root / split).iterdir()
                if p.is_dir() and not p.name.startswith(".")
            }
        )
        return {split: read_class_tree(root / split, names)[0] for split in ("train", "test")}
    return {"all": read_class_tree(root)[0]}

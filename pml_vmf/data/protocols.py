"""The evaluation protocols of the DML literature: which images train, which are queried, which are searched."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .cars196 import read_cars196
from .cub200 import read_cub200
from .fashion_mnist import read_fashion_mnist
from .image_folder import read_image_folder
from .inshop import read_inshop
from .labelled_images import LabelledImages, RetrievalSplits, class_disjoint_halves, hold_out_validation
from .sop import read_sop_split

# Official (images, classes) per split, asserted at load when data.check_protocol is true.
PROTOCOL_COUNTS = {
    "cub200": {"train": (5864, 100), "query": (5924, 100)},
    "cars196": {"train": (8054, 98), "query": (8131, 98)},
    "sop": {"train": (59551, 11318), "query": (60502, 11316)},
    "inshop": {"train": (25882, 3997), "query": (14218, 3985), "reference": (12612, 3985)},
    "fashion_mnist/class_disjoint": {"train": (30000, 5), "query": (5000, 5)},
    "fashion_mnist/closed_set": {"train": (60000, 10), "query": (10000, 10)},
}


def _class_range(images: LabelledImages, first: int, last: int) -> LabelledImages:
    return images.with_classes(np.arange(first, last + 1))


def _cub200(root: Path, protocol: str) -> tuple:
    images = read_cub200(root)
    return _class_range(images, 1, 100), _class_range(images, 101, 200), None


def _cars196(root: Path, protocol: str) -> tuple:
    images = read_cars196(root)
    return _class_range(images, 1, 98), _class_range(images, 99, 196), None


def _sop(root: Path, protocol: str) -> tuple:
    return read_sop_split(root, "train"), read_sop_split(root, "test"), None


def _inshop(root: Path, protocol: str) -> tuple:
    splits = read_inshop(root)
    # Query and gallery share item ids: remap them together so that labels still match across the two.
    query, gallery = splits["query"], splits["gallery"]
    _, dense = np.unique(np.concatenate([query.labels, gallery.labels]), return_inverse=True)
    return (
        splits["train"],
        LabelledImages(query.images, dense[: len(query)]),
        LabelledImages(gallery.images, dense[len(query) :]),
    )


def _split_by_protocol(train: LabelledImages, test: Optional[LabelledImages], protocol: str) -> tuple:
    if protocol == "closed_set":
        if test is None:
            raise ValueError("protocol closed_set needs separate train and test images (root/train and root/test).")
        return train, test, None
    if protocol != "class_disjoint":
        raise ValueError(f"data.protocol must be class_disjoint or closed_set, got {protocol!r}.")
    if test is None:
        return (*class_disjoint_halves(train), None)
    train_half, _ = class_disjoint_halves(train)
    _, test_half = class_disjoint_halves(test)
    return train_half, test_half, None


def _image_folder(root: Path, protocol: str) -> tuple:
    trees = read_image_folder(root)
    if "all" in trees:
        return _split_by_protocol(trees["all"], None, protocol)
    # Separate train/ and test/ trees are taken as they are, for either protocol.
    return trees["train"], trees["test"], None


def _fashion_mnist(root: Optional[Path], protocol: str) -> tuple:
    splits = read_fashion_mnist(root)
    return _split_by_protocol(splits["train"], splits["test"], protocol)


READERS: dict = {
    "cub200": _cub200,
    "cars196": _cars196,
    "sop": _sop,
    "inshop": _inshop,
    "image_folder": _image_folder,
    "fashion_mnist": _fashion_mnist,
}


def _check_counts(name: str, splits: dict) -> None:
    expected = PROTOCOL_COUNTS.get(name)
    if expected is None:
        return
    for split, (num_images, num_classes) in expected.items():
        found = (len(splits[split]), splits[split].num_classes)
        if found != (num_images, num_classes):
            raise ValueError(
                f"{name} {split} split has {found[0]} images of {found[1]} classes; the protocol has {num_images} of "
                f"{num_classes}. Is the dataset complete and unmodified? Set data.check_protocol=false to run anyway."
            )


def load_protocol(
    dataset: str,
    root: Optional[str],
    *,
    protocol: str = "class_disjoint",
    val_fraction: float = 0.1,
    val_by: str = "auto",
    check_protocol: bool = True,
    max_images_per_class: Optional[int] = None,
    seed: int = 0,
) -> RetrievalSplits:
    """Reads a dataset and splits it as its protocol says.

    Args:
        dataset: a key of :data:`READERS`.
        root: the dataset folder (Fashion-MNIST: optional, see :func:`read_fashion_mnist`).
        protocol: ``class_disjoint`` or ``closed_set``, for Fashion-MNIST and image folders; the DML datasets have
            one protocol each.
        val_fraction: the share of training classes or of each class's images held out for validation.
        val_by: ``classes``, ``images``, or ``auto``: classes for class-disjoint protocols, images for closed sets.
        check_protocol: assert the official image and class counts (:data:`PROTOCOL_COUNTS`).
        max_images_per_class: keep at most this many images per class in every split, for quick runs.
        seed: the seed of the validation split.

    Returns:
        The splits, each with labels remapped to 0..C-1 (query and gallery jointly); on closed sets the test and
        (validated by images) validation labels are the training labels.
    """
    if dataset not in READERS:
        raise ValueError(f"Unknown dataset {dataset!r}: data.dataset must be one of {', '.join(READERS)}.")
    if root is None and dataset != "fashion_mnist":
        raise ValueError(f"Dataset {dataset} needs its folder: pass --data-root PATH (or data.root=PATH).")
    train, query, reference = READERS[dataset](Path(root) if root is not None else None, protocol)
    if check_protocol:
        key = f"{dataset}/{protocol}" if dataset == "fashion_mnist" else dataset
        _check_counts(key, {"train": train, "query": query, "reference": reference})
    closed_set = protocol == "closed_set" and dataset in ("fashion_mnist", "image_folder")
    train = train.at_most_per_class(max_images_per_class)
    query = query.at_most_per_class(max_images_per_class)
    if reference is not None:
        reference = reference.at_most_per_class(max_images_per_class)
    if val_by not in ("auto", "classes", "images"):
        raise ValueError(f"data.val_by must be auto, classes or images, got {val_by!r}.")
    by_class = (not closed_set) if val_by == "auto" else val_by == "classes"
    train, val = hold_out_validation(train.remapped(), val_fraction, by_class=by_class, seed=seed)
    if closed_set:
        # Nearest-mean classification compares test labels with training labels: match them by class name.
        query = query.labelled_as(train)
    else:
        train = train.remapped()  # the validation classes left gaps
        if reference is None:
            query = query.remapped()
    # Closed set, validated by images: the held-out images keep the training labels (train is not renumbered on
    # this path), so that the loss's own classifier can be scored on them.
    val_in_train_labels = closed_set and not by_class and val is not None
    return RetrievalSplits(
        train=train,
        query=query,
        reference=reference,
        val=val if val_in_train_labels else (val.remapped() if val is not None else None),
        test_classes_are_train_classes=closed_set,
        val_classes_are_train_classes=val_in_train_labels,
    )

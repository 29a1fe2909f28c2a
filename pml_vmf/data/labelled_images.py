"""Images and their labels, as the dataset readers return them, and the splits of a retrieval protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

# Either image file paths or an in-memory uint8 array (N, H, W) or (N, H, W, C).
ImageSource = Union[Sequence[Path], np.ndarray]


@dataclass
class LabelledImages:
    """A list of images with one integer label each.

    Attributes:
        images: file paths, or a uint8 array of shape ``(N, H, W)`` or ``(N, H, W, C)``.
        labels: ``(N,)`` int64 class labels.
        class_names: the name of each label (``class_names[label]``), where the dataset names its classes; None
            otherwise. Kept through subsets and remapping, so that two splits can be matched class by class.
    """

    images: ImageSource
    labels: np.ndarray
    class_names: Optional[list] = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels: they must pair one to one.")
        if self.class_names is not None and len(self.labels) and self.labels.max() >= len(self.class_names):
            raise ValueError(f"label {self.labels.max()} has no name: {len(self.class_names)} class names given.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(np.unique(self.labels))

    def subset(self, indices: np.ndarray) -> LabelledImages:
        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(self.images, np.ndarray):
            images: ImageSource = self.images[indices]
        else:
            images = [self.images[i] for i in indices]
        return LabelledImages(images, self.labels[indices], self.class_names)

    def with_classes(self, classes: Sequence[int]) -> LabelledImages:
        """The images whose label is in ``classes``, in their original order."""
        return self.subset(np.flatnonzero(np.isin(self.labels, np.asarray(classes))))

    def remapped(self) -> LabelledImages:
        """The same images with labels renumbered 0..C-1 in sorted order, as classification-style losses need."""
        present, dense = np.unique(self.labels, return_inverse=True)
        names = [self.class_names[c] for c in present] if self.class_names is not None else None
        return LabelledImages(self.images, dense.reshape(-1), names)

    def labelled_as(self, train: LabelledImages) -> LabelledImages:
        """These images with the labels ``train`` gives the same class names, for a closed-set test split.

        Raises:
            ValueError: naming the classes ``train`` does not have, or when either split has no class names.
        """
        if self.class_names is None or train.class_names is None:
            raise ValueError(
                "A closed-set protocol matches test classes to training classes by name; this dataset has no class names."
            )
        index = {name: label for label, name in enumerate(train.class_names)}
        names = [self.class_names[c] for c in np.unique(self.labels)]
        missing = [name for name in names if name not in index]
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise ValueError(
                f"closed_set protocol: the test images have {len(missing)} class(es) the training images do not: "
                f"{shown}. Every test class needs training images (add them to train/), or use "
                "data.protocol=class_disjoint."
            )
        to_train = np.array([index.get(name, -1) for name in self.class_names])
        return LabelledImages(self.images, to_train[self.labels], list(train.class_names))

    def at_most_per_class(self, limit: Optional[int]) -> LabelledImages:
        """The first ``limit`` images of each class (all when ``limit`` is None), for quick runs."""
        if limit is None:
            return self
        keep = np.zeros(len(self), dtype=bool)
        for label in np.unique(self.labels):
            keep[np.flatnonzero(self.labels == label)[:limit]] = True
        return self.subset(np.flatnonzero(keep))


@dataclass
class RetrievalSplits:
    """The splits of one protocol, with labels already remapped to 0..C-1 within each split.

    Attributes:
        train: the training images.
        query: the test queries.
        reference: the gallery the queries are searched in; None when the query set is searched against itself
            (leave-one-out, as CUB, Cars196 and SOP do).
        val: the held-out validation split of the training classes, for checkpoint selection; None for no validation.
        test_classes_are_train_classes: True for closed-set protocols, where nearest-mean classification is defined.
        val_classes_are_train_classes: True when ``val`` holds images of the training classes, labelled as in
            ``train`` (closed-set protocols validated by images), where validation classification accuracy is defined.
    """

    train: LabelledImages
    query: LabelledImages
    reference: Optional[LabelledImages] = None
    val: Optional[LabelledImages] = None
    test_classes_are_train_classes: bool = False
    val_classes_are_train_classes: bool = False


def class_disjoint_halves(images: LabelledImages) -> tuple:
    """Splits the sorted classes in half: the first half for training, the second for testing."""
    classes = np.unique(images.labels)
    half = (len(classes) + 1) // 2
    return images.with_classes(classes[:half]), images.with_classes(classes[half:])


def hold_out_validation(train: LabelledImages, fraction: float, *, by_class: bool, seed: int = 0) -> tuple:
    """Takes a validation split out of the training images.

    Args:
        train: the training images.
        fraction: the share of classes (``by_class``) or of each class's images held out; 0 for none.
        by_class: hold out whole classes, for class-disjoint protocols; else images of every class (closed set).
        seed: the seed of the choice.

    Returns:
        ``(train, val)`` with ``val`` None when ``fraction`` is 0.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.val_fraction must lie in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return train, None
    rng = np.random.default_rng(seed)
    if by_class:
        classes = np.unique(train.labels)
        num_val = max(2, int(round(fraction * len(classes))))
        if num_val >= len(classes):
            raise ValueError(
                f"data.val_fraction={fraction} leaves no training class out of {len(classes)}: lower it or set it to 0."
            )
        val_classes = rng.choice(classes, size=num_val, replace=False)
        is_val = np.isin(train.labels, val_classes)
    else:
        is_val = np.zeros(len(train), dtype=bool)
        for label in np.unique(train.labels):
            members = np.flatnonzero(train.labels == label)
            is_val[rng.choice(members, size=int(round(fraction * len(members))), replace=False)] = True
    return train.subset(np.flatnonzero(~is_val)), train.subset(np.flatnonzero(is_val))

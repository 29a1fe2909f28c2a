"""m samples per class, one global batch at a time, each process drawing its own contiguous part of it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class MPerClassBatchSampler(torch.utils.data.Sampler):
    """A batch sampler for metric learning that is the same global batch whatever the number of processes.

    Every epoch, the classes are shuffled and each global batch takes ``samples_per_class`` images from each of
    ``batch_size / samples_per_class`` classes (with replacement only for classes that have fewer images). The
    order depends on ``seed`` and the epoch alone. Process ``rank`` of ``world_size`` gets the slice
    ``[rank * b, (rank + 1) * b)`` of every global batch (``b = batch_size / world_size``), so one process and many
    see the same global batches. Each index comes with its own augmentation seed, see
    :class:`~pml_vmf.data.ImageDataset`.

    Args:
        labels: the training labels.
        batch_size: the global batch size, divisible by ``samples_per_class`` and by ``world_size``.
        samples_per_class: m, the images drawn per class and batch.
        seed: the seed of the sampling and augmentation.
        rank: this process's index.
        world_size: the number of processes.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        samples_per_class: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % samples_per_class:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be a multiple of train.samples_per_class ({samples_per_class})."
            )
        if batch_size % world_size:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes ({world_size})."
            )
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.classes_per_batch = batch_size // samples_per_class
        if self.classes_per_batch > len(self.classes):
            raise ValueError(
                f"A batch of {batch_size} with {samples_per_class} per class needs {self.classes_per_batch} classes; "
                f"the training set has {len(self.classes)}. Lower train.batch_size or raise train.samples_per_class."
            )
        self.batch_size = batch_size
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        self.members = [np.flatnonzero(self.labels == c) for c in self.classes]
        # Enough batches that every image is seen about once per epoch.
        self.num_batches = max(1, len(self.labels) // batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Selects the epoch's batches; ``start_batch`` skips the first ones, to resume a run mid-epoch."""
        self.epoch = epoch
        self.start_batch = start_batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.seed = state["epoch"], state["seed"]

    def __len__(self) -> int:
        return self.num_batches

    def global_batches(self) -> np.ndarray:
        """``(num_batches, batch_size, 2)``: the (index, augmentation seed) pairs of this epoch's global batches."""
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = np.empty((self.num_batches, self.batch_size), dtype=np.int64)
        class_order = np.concatenate(
            [
                rng.permutation(len(self.classes))
                for _ in range(-(-self.num_batches * self.classes_per_batch // len(self.classes)))
            ]
        )
        for b in range(self.num_batches):
            chosen = class_order[b * self.classes_per_batch : (b + 1) * self.classes_per_batch]
            batches[b] = np.concatenate(
                [
                    rng.choice(
                        self.members[c], self.samples_per_class, replace=len(self.members[c]) < self.samples_per_class
                    )
                    for c in chosen
                ]
            )
        seeds = rng.integers(0, 2**31 - 1, size=batches.shape)
        return np.stack([batches, seeds], axis=-1)

    def __iter__(self) -> Iterator[list]:
        part = self.batch_size // self.world_size
        for batch in self.global_batches()[self.start_batch :]:
            local = batch[self.rank * part : (self.rank + 1) * part]
            yield [(int(index), int(seed)) for index, seed in local]

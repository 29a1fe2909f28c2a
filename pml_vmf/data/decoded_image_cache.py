"""An evaluation dataset that decodes each image once: later passes (validation, vMF's full passes) read memory."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from torchvision.transforms import Compose, Normalize, ToTensor
from torchvision.transforms.functional import pil_to_tensor

from ..errors import ConfigError
from .image_dataset import ImageDataset, load_rgb
from .labelled_images import LabelledImages


def split_eval_transform(transform: Callable) -> tuple:
    """Splits timm's eval transform ``Compose([..., ToTensor, Normalize])`` into the part that makes the image
    (decode-side: resize, crop) and the part that turns its uint8 pixels into the model's input.

    Returns:
        ``(to_image, to_input)``: ``to_input(pil_to_tensor(to_image(pil)))`` equals ``transform(pil)`` exactly.

    Raises:
        ConfigError: for a transform of another form, whose output could not be rebuilt from uint8 pixels.
    """
    steps = list(getattr(transform, "transforms", ()))
    if (
        not isinstance(transform, Compose)
        or len(steps) < 2
        or not isinstance(steps[-2], ToTensor)
        or not isinstance(steps[-1], Normalize)
    ):
        raise ConfigError(
            f"data.cache_eval_images keeps images as uint8 pixels before ToTensor and Normalize, so it needs an eval "
            f"transform that ends with them (timm's does); got {transform!r}. Set data.cache_eval_images=false."
        )
    normalize = steps[-1]
    return Compose(steps[:-2]), lambda pixels: normalize(pixels.float().div(255))  # what ToTensor does to uint8


class DecodedImageCache(ImageDataset):
    """:class:`ImageDataset` with a deterministic eval transform, keeping each image after its first decode.

    An image is decoded, resized and cropped once and kept as uint8 pixels (3 x H x W bytes); every later access
    only normalises them, giving exactly what the transform gives. Each access checks the file's size and
    modification time, so an image replaced on disk is decoded again (a stat, not a read). The cache lives in the process that reads the
    dataset: load it without workers (``num_workers=0``), or each worker would fill a copy that dies with it. Under
    several processes each holds the images of its own share of the batches.

    Args:
        images: the images and labels.
        transform: timm's eval transform (see :func:`split_eval_transform`).
    """

    def __init__(self, images: LabelledImages, transform: Callable) -> None:
        super().__init__(images, transform)
        self.to_image, self.to_input = split_eval_transform(transform)
        self.pixels: dict = {}

    @property
    def cached_bytes(self) -> int:
        return sum(pixels.numel() for _, pixels in self.pixels.values())

    def __getitem__(self, index: int) -> tuple:
        stamp = self._file_stamp(index)
        cached = self.pixels.get(index)
        if cached is None or (stamp is not None and cached[0] != stamp):  # a file replaced since: decoded again
            cached = self.pixels[index] = (stamp, pil_to_tensor(self.to_image(load_rgb(self.images, index))))
        return self.to_input(cached[1]), int(self.images.labels[index]), index

    def _file_stamp(self, index: int) -> tuple | None:
        """The image file's size and modification time (nanoseconds), or None for images held in memory."""
        source = self.images.images
        if isinstance(source, np.ndarray):
            return None
        try:
            status = os.stat(source[index])
        except OSError:
            return None  # gone since its decode: the decode stands (a missing file is named where it is first read)
        return status.st_size, status.st_mtime_ns

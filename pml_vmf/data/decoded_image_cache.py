"""An evaluation dataset that decodes each image once: later passes (validation, vMF's full passes) read memory."""

from __future__ import annotations

from typing import Callable

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
    if not isinstance(transform, Compose) or len(steps) < 2 or not isinstance(steps[-2], ToTensor) or not isinstance(steps[-1], Normalize):
        raise ConfigError(
            f"data.cache_eval_images keeps images as uint8 pixels before ToTensor and Normalize, so it needs an eval "
            f"transform that ends with them (timm's does); got {transform!r}. Set data.cache_eval_images=false."
        )
    normalize = steps[-1]
    return Compose(steps[:-2]), lambda pixels: normalize(pixels.float().div(255))  # what ToTensor does to uint8


class DecodedImageCache(ImageDataset):
    """:class:`ImageDataset` with a deterministic eval transform, keeping each image after its first decode.

    An image is decoded, resized and cropped once and kept as uint8 pixels (3 x H x W bytes); every later access
    only normalises them, giving exactly what the transform gives. The cache lives in the process that reads the
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
        return sum(p.numel() for p in self.pixels.values())

    def __getitem__(self, index: int) -> tuple:
        pixels = self.pixels.get(index)
        if pixels is None:
            pixels = self.pixels[index] = pil_to_tensor(self.to_image(load_rgb(self.images, index)))
        return self.to_input(pixels), int(self.images.labels[index]), index

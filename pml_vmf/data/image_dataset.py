"""A torch Dataset over LabelledImages: RGB PIL images through a transform, with per-sample seeded augmentation."""

from __future__ import annotations

import random
from typing import Callable, Optional, Union

import numpy as np
import torch
from PIL import Image

from .labelled_images import LabelledImages


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded (truncated, corrupt); the message names the file."""


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit (integer or float) single-channel image scaled to 8 bits by the range of its type, which
    PIL's ``convert`` would clip to 0-255 instead (a 16-bit image becomes two grey levels, a float one black)."""
    values = np.asarray(image)
    if values.dtype == np.uint8:
        return image
    if np.issubdtype(values.dtype, np.floating):
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # Floats in [0, 1] are intensities; any other range is stretched from its minimum to its maximum.
        low, high = (0.0, 1.0) if finite.min() >= 0 and finite.max() <= 1 else (finite.min(), finite.max())
    else:
        info = np.iinfo(values.dtype)
        # PIL reads 16-bit PNGs as 32-bit integers ("I"): their range is 16 bits when the values fit in it.
        top = 65535 if image.mode.startswith("I") and values.min() >= 0 and values.max() <= 65535 else info.max
        finite, low, high = values.astype(np.float64), (0 if values.min() >= 0 else info.min), top
    scaled = np.clip((finite - low) / max(high - low, 1e-12), 0, 1)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")


def rgb_on_white(image: Image.Image) -> Image.Image:
    """``image`` as RGB, anything transparent (RGBA, LA, palette) composited onto a white background; 16-bit and
    32-bit images scaled to 8 bits by their type's range, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8_bit(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_rgb(images: LabelledImages, index: int) -> Image.Image:
    """The image at ``index`` as RGB; grayscale and RGBA sources are converted (RGBA onto white)."""
    source = images.images
    if isinstance(source, np.ndarray):
        return rgb_on_white(Image.fromarray(source[index]))
    try:
        with Image.open(source[index]) as opened:
            return rgb_on_white(opened)
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for truncated or corrupt files
        raise UnreadableImageError(
            f"Cannot read image {source[index]} ({type(error).__name__}: {error}). Replace or delete the file; "
            "image folders skip unreadable files when they are listed, but this one was damaged past its header."
        ) from error


class ImageDataset(torch.utils.data.Dataset):
    """Yields ``(image, label, index)``.

    Indexed by an int, or by ``(index, seed)`` as :class:`~pml_vmf.data.MPerClassBatchSampler` yields: the random
    augmentation of that sample is then drawn from ``seed`` alone, so it is the same whichever process or worker
    loads it, and a resumed run sees the same images as one that ran through.
    """

    def __init__(self, images: LabelledImages, transform: Optional[Callable] = None) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: Union[int, tuple]) -> tuple:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = load_rgb(self.images, index)
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                python_state = random.getstate()
                with torch.random.fork_rng(devices=[]):
                    random.seed(seed)  # timm's random resized crop draws from `random`, torchvision's from torch
                    torch.manual_seed(seed)
                    image = self.transform(image)
                random.setstate(python_state)
        return image, int(self.images.labels[index]), index

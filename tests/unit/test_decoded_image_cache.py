"""data.cache_eval_images: the cache gives exactly what the eval transform gives, and decodes each image once."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from pml_vmf.data import DecodedImageCache, ImageDataset, LabelledImages, build_transforms
from pml_vmf.data.image_dataset import UnreadableImageError
from pml_vmf.errors import ConfigError
from pml_vmf.models import create_embedding_model


def _image_files(folder, count=5):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        mode = "RGBA" if i % 2 else "RGB"  # RGBA goes onto white, as ImageDataset does
        Image.fromarray(rng.integers(0, 256, (40 + i, 37, len(mode)), dtype=np.uint8), mode).save(path)
        paths.append(path)
    return LabelledImages(paths, np.arange(count) % 2)


def test_the_cache_returns_what_the_transform_returns_and_reads_each_file_once(tmp_path):
    images = _image_files(tmp_path)
    _, eval_transform = build_transforms(
        create_embedding_model("test_resnet", 8).backbone, 32, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.25]
    )
    plain, cached = ImageDataset(images, eval_transform), DecodedImageCache(images, eval_transform)
    expected = [plain[i] for i in range(len(images))]
    for i, (image, label, index) in enumerate(expected):
        got = cached[i]
        assert torch.equal(got[0], image) and got[1:] == (label, index)
    assert cached.cached_bytes == len(images) * 3 * 32 * 32
    for path in images.images:
        path.unlink()  # a second pass must not need the files
    for i, (image, _, _) in enumerate(expected):
        assert torch.equal(cached[i][0], image)
    with pytest.raises(UnreadableImageError, match="Cannot read image"):
        plain[0]


def test_a_transform_the_cache_cannot_rebuild_is_refused_with_the_setting_to_change(tmp_path):
    images = _image_files(tmp_path, 1)
    for transform in (transforms.ToTensor(), transforms.Compose([transforms.ToTensor(), transforms.Resize(8)])):
        with pytest.raises(ConfigError, match="data.cache_eval_images=false"):
            DecodedImageCache(images, transform)


def test_an_image_replaced_on_disk_is_decoded_again(tmp_path):
    import os

    images = _image_files(tmp_path)
    _, eval_transform = build_transforms(create_embedding_model("test_resnet", 8).backbone, 32)
    cached = DecodedImageCache(images, eval_transform)
    first = cached[0][0]
    Image.fromarray(np.zeros((40, 37, 3), dtype=np.uint8)).save(images.images[0])  # replaced in place
    status = os.stat(images.images[0])
    os.utime(images.images[0], ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))  # even within a second
    assert torch.equal(cached[0][0], ImageDataset(images, eval_transform)[0][0]) and not torch.equal(
        cached[0][0], first
    )

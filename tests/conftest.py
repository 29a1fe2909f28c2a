"""Shared fixtures: the device under test comes from PML_VMF_TEST_DEVICE (default cpu), as timm's tests do."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEST_DEVICE = torch.device(os.environ.get("PML_VMF_TEST_DEVICE", "cpu"))


@pytest.fixture
def device() -> torch.device:
    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


_REPORTED: "list[str]" = []


@pytest.fixture
def report():
    """Lines a test wants shown in the terminal summary (measured numbers, not assertions)."""
    return _REPORTED.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _REPORTED:
        terminalreporter.section("measured by the tests")
        for line in _REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> "os.PathLike":
    """UCI digits (1,797 real 8x8 images, bundled with scikit-learn) as an image-folder tree root/<class>/<n>.png."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    for n, (image, label) in enumerate(zip(images, digits.target)):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{n:04d}.png")
    return root

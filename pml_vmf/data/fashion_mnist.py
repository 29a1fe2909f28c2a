"""Fashion-MNIST (Xiao et al. 2017) from local IDX files, falling back to torchvision's download."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

from .dataset_files import DatasetNotFoundError
from .labelled_images import LabelledImages

# Label i of the IDX files (Xiao, Rasul & Vollgraf 2017).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Where Debian's `dataset-fashion-mnist` package puts the files.
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (``.gz`` or not): images ``(N, 28, 28)`` uint8 or labels ``(N,)`` uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    num_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * num_dims).reshape(shape)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def read_fashion_mnist(root: Optional[Path] = None, download: bool = True) -> dict:
    """The official ``train`` (60,000) and ``test`` (10,000) splits, labels 0..9.

    Args:
        root: a folder with the four IDX files (gzipped or not); defaults to Debian's ``/usr/share/datasets/fashion-mnist``.
        download: without ``root``, when Debian's files are not there, download them with torchvision into
            ``~/.cache/pml_vmf/fashion-mnist``. A ``root`` given is only read: nothing is downloaded into it.
    """
    folder = Path(root) if root is not None else DEBIAN_FOLDER
    paths = {split: [_find(folder, stem) for stem in stems] for split, stems in FILES.items()}
    if any(p is None for pair in paths.values() for p in pair):
        missing = [
            f"{stem}(.gz)" for split, stems in FILES.items() for stem, p in zip(stems, paths[split]) if p is None
        ]
        if not download or root is not None:
            raise DatasetNotFoundError(
                f"Fashion-MNIST IDX files not found in {folder} (missing {', '.join(missing)}). Install them with "
                "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or get them from "
                "https://github.com/zalandoresearch/fashion-mnist and pass their folder with --data-root; without "
                "--data-root they are downloaded into ~/.cache/pml_vmf/fashion-mnist."
            )
        import torchvision

        cache = Path.home() / ".cache" / "pml_vmf" / "fashion-mnist"
        try:
            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(cache), train=train, download=True)
        except (OSError, RuntimeError) as error:  # offline: urllib's URLError is an OSError
            raise DatasetNotFoundError(
                f"Fashion-MNIST is not installed and could not be downloaded into {cache} ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:150] if str(error) else 'no connection'}). Install Debian's "
                "dataset-fashion-mnist, or pass a folder of the four IDX files with --data-root."
            ) from None
        return read_fashion_mnist(cache, download=False)
    return {
        split: LabelledImages(read_idx(images), read_idx(labels), class_names=list(CLASS_NAMES))
        for split, (images, labels) in paths.items()
    }

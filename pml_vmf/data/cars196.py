"""Cars196 (Krause et al. 2013) in its official layout: cars_annos.mat and car_ims/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset_files import require_file
from .labelled_images import LabelledImages

SOURCE = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (mirrored on Kaggle as 'stanford-cars-dataset')"


def read_cars196(root: Path) -> LabelledImages:
    """All 16,185 images with their class ids 1..196; the protocol trains on 1-98 and tests on 99-196."""
    from scipy.io import loadmat  # scipy comes with scikit-learn, which pytorch-metric-learning needs

    root = Path(root)
    annotations = loadmat(require_file(root, ["cars_annos.mat"], "Cars196", SOURCE), squeeze_me=True)["annotations"]
    paths = [root / str(rel) for rel in np.atleast_1d(annotations["relative_im_path"])]
    return LabelledImages(paths, np.atleast_1d(annotations["class"]).astype(np.int64))

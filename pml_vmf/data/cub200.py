"""CUB-200-2011 (Wah et al. 2011) in its official layout: images.txt, image_class_labels.txt, images/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset_files import read_table, require_file
from .labelled_images import LabelledImages

SOURCE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"


def read_cub200(root: Path) -> LabelledImages:
    """All 11,788 images with their class ids 1..200; the protocol trains on 1-100 and tests on 101-200."""
    root = Path(root)
    images_file = require_file(root, ["images.txt"], "CUB-200-2011", SOURCE)
    labels_file = require_file(root, ["image_class_labels.txt"], "CUB-200-2011", SOURCE)
    paths = {image_id: root / "images" / rel for image_id, rel in read_table(images_file)}
    rows = read_table(labels_file)
    return LabelledImages([paths[image_id] for image_id, _ in rows], np.array([int(c) for _, c in rows]))

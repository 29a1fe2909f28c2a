"""Stanford Online Products (Oh Song et al. 2016) in its official layout: Ebay_train.txt, Ebay_test.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset_files import read_table, require_file
from .labelled_images import LabelledImages

SOURCE = "https://cvgl.stanford.edu/projects/lifted_struct/"


def read_sop_split(root: Path, split: str) -> LabelledImages:
    """The ``train`` or ``test`` list of Stanford Online Products, labelled by product (class_id)."""
    root = Path(root)
    rows = read_table(require_file(root, [f"Ebay_{split}.txt"], "Stanford Online Products", SOURCE), skip_lines=1)
    return LabelledImages([root / row[3] for row in rows], np.array([int(row[1]) for row in rows]))

"""In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016): list_eval_partition.txt and the img/ folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset_files import read_table, require_file
from .labelled_images import LabelledImages

SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html"


def read_inshop(root: Path) -> dict:
    """The ``train``, ``query`` and ``gallery`` partitions, labelled by item id (``id_00000002`` -> 2)."""
    root = Path(root)
    partition = require_file(
        root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"], "In-Shop Clothes Retrieval", SOURCE
    )
    image_root = root / "Img" if (root / "Img" / "img").is_dir() else root
    rows = read_table(partition, skip_lines=2)  # line 1: the image count; line 2: the column names
    splits = {}
    for name in ("train", "query", "gallery"):
        chosen = [row for row in rows if row[2] == name]
        splits[name] = LabelledImages(
            [image_root / row[0] for row in chosen], np.array([int(row[1].split("_")[-1]) for row in chosen])
        )
    return splits

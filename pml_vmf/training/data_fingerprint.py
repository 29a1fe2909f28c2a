"""What data a run trains on, recorded when it starts and compared when it resumes: a changed image folder under a
resumed run is named, not trained on silently (the sampler's position and the miner's sums refer to the old data)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..data import LabelledImages, RetrievalSplits
from ..files import atomic_write_text

FINGERPRINT_FILE = "data_fingerprint.json"


def split_fingerprint(images: LabelledImages) -> dict:
    """Counts, class names and a SHA-256 over every image's name, size and label (file contents are not read:
    a stat per image), or over the pixels of images held in memory."""
    digest = hashlib.sha256()
    source = images.images
    if isinstance(source, np.ndarray):
        digest.update(np.ascontiguousarray(source).tobytes())
        digest.update(np.asarray(images.labels, dtype=np.int64).tobytes())
    else:
        for path, label in zip(source, images.labels.tolist()):
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            digest.update(f"{Path(path).parent.name}/{Path(path).name}\0{size}\0{label}\n".encode())
    classes = images.class_names if images.class_names is not None else sorted({int(v) for v in images.labels.tolist()})
    return {"images": len(images), "classes": [str(c) for c in classes], "sha256": digest.hexdigest()}


def splits_fingerprint(splits: RetrievalSplits) -> dict:
    names = ("train", "val", "query", "reference")
    return {name: split_fingerprint(getattr(splits, name)) for name in names if getattr(splits, name) is not None}


def write_fingerprint(run_root: Path, splits: RetrievalSplits) -> None:
    atomic_write_text(Path(run_root) / FINGERPRINT_FILE, json.dumps(splits_fingerprint(splits), indent=1) + "\n")


def data_changes(run_root: Path, splits: RetrievalSplits) -> Optional[str]:
    """What differs between the data the run started on and ``splits`` (one sentence), or None. A run without a
    recorded fingerprint (an older version) is not checked."""
    path = Path(run_root) / FINGERPRINT_FILE
    try:
        saved = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    current = splits_fingerprint(splits)
    changes = []
    for name in sorted(set(saved) | set(current)):
        before, now = saved.get(name), current.get(name)
        if not isinstance(before, dict) or now is None:
            changes.append(f"the {name} split {'appeared' if now else 'is gone'}")
            continue
        if before.get("sha256") == now["sha256"]:
            continue
        added = [c for c in now["classes"] if c not in set(before.get("classes", []))]
        removed = [c for c in before.get("classes", []) if c not in set(now["classes"])]
        detail = f"{before.get('images')} -> {now['images']} images"
        if added:
            detail += f", classes added: {', '.join(added[:5])}{'...' if len(added) > 5 else ''}"
        if removed:
            detail += f", classes gone: {', '.join(removed[:5])}{'...' if len(removed) > 5 else ''}"
        if not added and not removed and before.get("images") == now["images"]:
            detail += ", the same count but other files or sizes"
        changes.append(f"{name}: {detail}")
    return "; ".join(changes) if changes else None

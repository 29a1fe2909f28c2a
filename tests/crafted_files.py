"""A crafted pickle, as an attacker would plant in a model, an index's model or a checkpoint."""

from pathlib import Path

import torch


class _CreatesMarker:
    """Unpickled, it calls ``open(marker, "w")``: the file's existence proves that loading ran the file's code."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def craft_pickle(path: Path, marker: Path) -> Path:
    """Writes a .pt file that, unpickled in full, creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": _CreatesMarker(marker)}, path)
    return path

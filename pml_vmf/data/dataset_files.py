"""Locating a dataset's official files, with errors that say which file is missing and where to get it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or one of its official files is missing."""


def require_file(root: Path, candidates: Sequence[str], dataset: str, source: str) -> Path:
    """Returns the first of ``candidates`` (paths relative to ``root``) that exists.

    Raises:
        DatasetNotFoundError: naming the file that was looked for, the folder, and where the dataset comes from.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"The {dataset} folder {root} does not exist. Download {dataset} from {source} and pass its folder "
            "with --data-root (or data.root=...)."
        )
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise DatasetNotFoundError(
        f"{dataset}: {' or '.join(candidates)} not found in {root}. Is this the unpacked {dataset} folder? "
        f"It comes from {source}."
    )


def read_table(path: Path, skip_lines: int = 0) -> list:
    """The whitespace-separated rows of a text annotation file, after ``skip_lines`` header lines."""
    return [line.split() for line in path.read_text().splitlines()[skip_lines:] if line.strip()]

"""Writing files and folders so that a crash or a kill leaves the old one or the new one, never half or a mix; and
the CSV tables of results written that way."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: Path) -> None:
    """Gives ``path`` the mode a plain ``open``/``mkdir`` would (0644/0755 under the usual umask): temporary files and
    folders are created 0600/0700, and so are safetensors files."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` so that a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        make_readable(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_folder(final: Path, *, overwrite: bool = False, what: str = "folder") -> Iterator[Path]:
    """A temporary folder beside ``final`` to write into; renamed to ``final`` once the block ends without an error,
    removed if it raises. Readers see the previous folder whole until the rename, then the new one whole.

    Args:
        final: the folder to create.
        overwrite: replace an existing ``final`` (whole, once the new one is complete); else an existing one is an
            error and nothing is written.
        what: what the folder is, for the error message ("index", "export").

    Raises:
        FileExistsError: when ``final`` exists and ``overwrite`` is false (checked before anything is written).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"{final} already exists and was left as it is: choose another {what} folder, or pass --overwrite "
            f"(overwrite=True) to replace it whole once the new {what} is complete."
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        make_readable(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(path: Path) -> list:
    """The rows of a CSV file as dicts of strings; ``[]`` when it does not exist."""
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list) -> None:
    """Writes the rows as CSV (the union of their columns), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())

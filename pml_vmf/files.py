"""Writing files and folders so that a crash or a kill leaves the old one or the new one, never half or a mix; and
the CSV tables of results written that way."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import glob
import hashlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional


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
def staged_folder(
    final: Path, *, overwrite: bool = False, what: str = "folder", owned_names: Optional[Sequence[str]] = None
) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write into; swapped into place once the block ends without an error,
    removed if it raises. Readers see the previous folder whole until the swap, then the new one whole.

    The swap is one atomic ``renameat2(RENAME_EXCHANGE)`` on Linux, so a kill at any moment leaves the old folder or
    the new one at ``final``; elsewhere two renames, and the next save puts back an old folder a kill left between
    them. Leftovers of killed saves (``.NAME.*.tmp``, ``.NAME.*.old``) are removed at the next save of ``final``.

    Args:
        final: the folder to create.
        overwrite: replace an existing ``final`` (whole, once the new one is complete); else an existing one is an
            error and nothing is written.
        what: what the folder is, for the error message ("index", "export").
        owned_names: the names such a folder holds (the first is required): ``overwrite`` replaces only a folder
            that holds the first and nothing but these, never an input, a run folder or another folder.

    Raises:
        FileExistsError: when ``final`` exists and ``overwrite`` is false, or it is not a folder of this kind
            (checked before anything is written).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _recover_killed_saves(final)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{final} already exists and was left as it is: choose another {what} folder, or pass --overwrite "
                f"(overwrite=True) to replace it whole once the new {what} is complete."
            )
        check_replaceable(final, what, owned_names)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        make_readable(tmp)
        if final.exists():
            if _exchange(tmp, final):
                shutil.rmtree(tmp)  # now the old folder
                return
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out_folder(out: Path, overwrite: bool, what: str, owned_names: Sequence[str]) -> None:
    """What a script checks of its ``--out`` before its long work: absent, or (with ``--overwrite``) a folder of its
    own kind (:func:`check_replaceable`). Raises ``FileExistsError`` with the message to print."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{out} already exists and was left as it is: choose another --out, or pass --overwrite."
            )
        check_replaceable(out, what, owned_names)


def check_replaceable(final: Path, what: str, owned_names: Optional[Sequence[str]]) -> None:
    """Raises ``FileExistsError`` unless ``final`` is a folder that ``--overwrite`` may replace: one that holds the
    first of ``owned_names`` and nothing else (see :func:`staged_folder`). Scripts call it before their long work."""
    a_what = f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
    if final.is_symlink() or not final.is_dir():
        raise FileExistsError(
            f"{final} is {'a link' if final.is_symlink() else 'a file'}, not {a_what} folder: --overwrite replaces only {a_what} folder; choose another folder."
        )
    if owned_names is None:
        return
    names = {p.name for p in final.iterdir()}
    foreign = sorted(names - set(owned_names))
    if owned_names[0] not in names or foreign:
        held = ", ".join(foreign[:5]) + ("..." if len(foreign) > 5 else "") if foreign else f"no {owned_names[0]}"
        raise FileExistsError(
            f"{final} is not {a_what} folder this tool wrote ({held}): --overwrite replaces only such a folder, "
            "never an input, a run folder or other files. Choose another folder; nothing was changed."
        )


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the platform
    or the file system cannot, and nothing was changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(error, os.strerror(error), str(b))


def _recover_killed_saves(final: Path) -> None:
    """Puts back an old ``final`` that a kill left between two renames, and removes what killed saves left."""
    for old in sorted(final.parent.glob(f".{glob.escape(final.name)}.*.old")):
        inner = old / final.name
        if inner.is_dir() and not final.exists():
            os.replace(inner, final)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def file_problem(path: Path, expected: dict) -> str | None:
    """What is wrong with ``path`` against the ``{"bytes": ..., "sha256": ...}`` recorded when it was written
    (missing, truncated, altered), or None."""
    if not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size != expected["bytes"]:
        return f"{path} is truncated or altered ({path.stat().st_size} bytes, {expected['bytes']} written)"
    if file_sha256(path) != expected["sha256"]:
        return f"{path} is altered (its SHA-256 differs from the one written)"
    return None


def read_rows(path: Path) -> list:
    """The rows of a CSV file as dicts of strings; ``[]`` when it does not exist."""
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, rows: list, fieldnames: list) -> None:
    """Appends the rows to a CSV file of these columns, writing its header first when the file is new: a benchmark's
    results as each run finishes, so that a stopped benchmark keeps them and its rerun can skip them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)


def write_rows(path: Path, rows: list) -> None:
    """Writes the rows as CSV (the union of their columns), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())

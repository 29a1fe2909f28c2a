"""staged_folder: --overwrite replaces only a folder of its own kind; the swap leaves the old or the new folder at
every moment; leftovers of killed saves are put back or removed."""

import os

import pytest

from pml_vmf import files
from pml_vmf.files import staged_folder

OWNED = ("index.json", "index.faiss", "paths.json")


def _write_index(folder, text):
    with staged_folder(folder, overwrite=True, what="index", owned_names=OWNED) as staging:
        for name in OWNED:
            (staging / name).write_text(text)


def test_overwrite_replaces_a_folder_of_its_own_kind_whole(tmp_path):
    out = tmp_path / "index"
    _write_index(out, "old")
    _write_index(out, "new")
    assert sorted(p.name for p in out.iterdir()) == sorted(OWNED)
    assert (out / "index.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # nothing left beside it


@pytest.mark.parametrize(
    "holds", [["0001.png", "0002.png"], ["index.json", "notes.txt"], ["config.yaml", "checkpoints"]]
)
def test_overwrite_refuses_an_input_a_run_folder_or_a_foreign_folder(tmp_path, holds):
    out = tmp_path / "images"
    out.mkdir()
    for name in holds:
        (out / name).write_text("user data")
    with pytest.raises(FileExistsError, match="not an index folder this tool wrote.*nothing was changed"):
        _write_index(out, "new")
    assert sorted(p.name for p in out.iterdir()) == sorted(holds)
    assert all((out / name).read_text() == "user data" for name in holds)


def test_the_swap_is_one_atomic_exchange_on_linux(tmp_path, monkeypatch):
    out = tmp_path / "index"
    _write_index(out, "old")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    _write_index(out, "new")
    if files.sys.platform.startswith("linux"):
        assert renames == []  # renameat2(RENAME_EXCHANGE): no moment without a folder at out
    assert (out / "index.json").read_text() == "new"


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_save(tmp_path):
    """The fallback's window: the old folder moved aside, the new one not yet in place, the process killed."""
    out = tmp_path / "index"
    _write_index(out, "old")
    aside = tmp_path / ".index.abc.old"
    aside.mkdir()
    os.replace(out, aside / "index")
    (tmp_path / ".index.def.tmp").mkdir()  # the killed save's staging folder
    with pytest.raises(FileExistsError):  # the next save finds the old index back in place first
        with staged_folder(out, what="index", owned_names=OWNED):
            pass
    assert (out / "index.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]

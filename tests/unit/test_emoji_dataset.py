"""The emoji builder on tiny fake npm tarballs: split rule, skin tones and vendor-missing classes left out."""

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from pml_vmf.data.emoji import VENDORS, build_emoji_dataset, split_of

CODES = ["1f600", "1f601", "1f44d", "1f44d-1f3fd", "1f602", "2764-fe0f", "1f603", "1f604", "1f605"]


def _fake_tarball(path: Path, vendor: str, codes: list) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for code in codes:
            buffer = io.BytesIO()
            Image.new("RGBA", (64, 64), (255, 0, 0, 0) if code == "1f600" else (0, 0, 255, 255)).save(buffer, "PNG")
            info = tarfile.TarInfo(f"package/img/{vendor}/64/{code}.png")
            info.size = len(buffer.getvalue())
            archive.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


def _tarballs(tmp_path: Path) -> dict:
    # Facebook lacks 1f605: that class is left out.
    return {
        v: _fake_tarball(tmp_path / f"{v}.tgz", v, [c for c in CODES if not (v == "facebook" and c == "1f605")])
        for v in VENDORS
    }


def test_classes_split_by_index_mod_3_and_reserved_classes_are_never_written(tmp_path):
    counts = build_emoji_dataset(_tarballs(tmp_path), tmp_path / "out")
    expected = sorted(c for c in CODES if "1f3fd" not in c and c != "1f605")  # no skin tone, all four vendors
    assert counts == {"classes": 7, "train": 3, "test": 2, "reserved": 2}
    for index, code in enumerate(expected):
        split = split_of(index)
        written = [s for s in ("train", "test") if (tmp_path / "out" / s / code).is_dir()]
        assert written == ([] if split == "reserved" else [split]), code
    for folder in (tmp_path / "out").glob("*/*"):
        assert sorted(p.stem for p in folder.iterdir()) == sorted(VENDORS)
    assert not list((tmp_path / "out").rglob("1f44d-1f3fd")) and not list((tmp_path / "out").rglob("1f605"))


def test_transparent_pixels_become_white(tmp_path):
    build_emoji_dataset(_tarballs(tmp_path), tmp_path / "out")
    image = Image.open(next((tmp_path / "out").rglob("1f600/apple.png")))  # index 3 in sorted order: train
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_a_missing_vendor_is_an_error(tmp_path):
    tarballs = _tarballs(tmp_path)
    del tarballs["google"]
    with pytest.raises(ValueError, match="missing for google"):
        build_emoji_dataset(tarballs, tmp_path / "out")

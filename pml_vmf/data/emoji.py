"""Emoji across vendors: a many-class, few-image retrieval set built offline from the npm emoji-datasource packages.

One class per emoji code that all four vendors draw (skin-tone variants left out), one 64x64 image per vendor,
composited onto white. Classes are sorted by code; with k the index in that order, k % 3 == 0 trains, k % 3 == 1
tests, and k % 3 == 2 is reserved for an independent evaluation: those classes are never written.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from .image_dataset import rgb_on_white

VENDORS = ("apple", "google", "twitter", "facebook")
NPM_VERSION = "16.0.0"
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")
SPLITS = {0: "train", 1: "test"}  # k % 3 == 2: reserved, never built
LICENCES = {
    "apple": "Apple: not for commercial use",
    "google": "Google (Noto Emoji): Apache-2.0",
    "twitter": "Twitter (Twemoji): CC-BY-4.0",
    "facebook": "Facebook: licence unclear",
}


def read_vendor_images(tarball: Path, vendor: str) -> dict:
    """``{code: PNG bytes}`` of ``package/img/<vendor>/64/<code>.png`` in an ``npm pack`` tarball."""
    pattern = re.compile(rf"package/img/{vendor}/64/([0-9a-f-]+)\.png$")
    images = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            match = pattern.match(member.name)
            if match and member.isfile():
                images[match.group(1)] = archive.extractfile(member).read()
    if not images:
        raise ValueError(f"{tarball} holds no package/img/{vendor}/64/*.png: is it emoji-datasource-{vendor}?")
    return images


def emoji_classes(codes_by_vendor: Mapping[str, set]) -> list:
    """The sorted codes every vendor draws, skin-tone variants left out."""
    common = set.intersection(*(set(codes) for codes in codes_by_vendor.values()))
    return sorted(code for code in common if not any(tone in code for tone in SKIN_TONES))


def split_of(index: int) -> str:
    """``train``, ``test`` or ``reserved`` for the class at ``index`` in sorted order."""
    return SPLITS.get(index % 3, "reserved")


def on_white(png: bytes) -> Image.Image:
    """An RGBA PNG composited onto a white background, as RGB."""
    with Image.open(io.BytesIO(png)) as image:
        return rgb_on_white(image)


def build_emoji_dataset(tarballs: Mapping[str, Path], out: Path) -> dict:
    """Writes ``out/train/<code>/<vendor>.png`` and ``out/test/<code>/<vendor>.png``; reserved classes are skipped.

    Args:
        tarballs: vendor -> its ``emoji-datasource-<vendor>-16.0.0.tgz``; all of :data:`VENDORS`.
        out: the image-folder root the recipes read (``data.dataset=image_folder``).

    Returns:
        ``{"classes": all classes, "train": n, "test": n, "reserved": n}`` (class counts).
    """
    missing = [v for v in VENDORS if v not in tarballs]
    if missing:
        raise ValueError(
            f"Tarballs missing for {', '.join(missing)}: npm pack emoji-datasource-<vendor>@{NPM_VERSION}."
        )
    images = {vendor: read_vendor_images(Path(tarballs[vendor]), vendor) for vendor in VENDORS}
    classes = emoji_classes({vendor: set(by_code) for vendor, by_code in images.items()})
    counts = {"classes": len(classes), "train": 0, "test": 0, "reserved": 0}
    for index, code in enumerate(classes):
        split = split_of(index)
        counts[split] += 1
        if split == "reserved":
            continue
        folder = Path(out) / split / code
        folder.mkdir(parents=True, exist_ok=True)
        for vendor in VENDORS:
            on_white(images[vendor][code]).save(folder / f"{vendor}.png")
    return counts

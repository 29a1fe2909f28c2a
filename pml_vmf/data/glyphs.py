"""Chinese characters across typefaces: a many-class retrieval set rendered offline from Debian's CJK font packages.

One class per level-1 character of GB 2312 (3,755, computed with Python's ``gb2312`` codec), one 64x64 image per
typeface that draws it: black on white, centred. A typeface is one design of a family (the weights of a family are
near-duplicates, so only its regular face is used). Characters are kept where every chosen typeface really draws
them: the character is in the font's cmap, and its rendering differs both from a blank image and from the font's
.notdef box. Classes are sorted by code point; with k the index in that order, k % 3 == 0 trains, k % 3 == 1 tests,
and k % 3 == 2 is reserved for an independent evaluation: those classes are never written (the emoji rule).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .emoji import split_of

IMAGE_SIZE = 64
MISSING_PROBE = "\U0010fffd"  # a private-use code point no font draws: renders as the font's .notdef box


@dataclass(frozen=True)
class Typeface:
    """One design: a font file (and its face in a collection) and where it comes from.

    Attributes:
        name: a short name, the image's file name in each class folder.
        package: the Debian package that installs it.
        pattern: a glob of the font file under /usr/share/fonts.
        index: the face in a TrueType/OpenType collection (.ttc).
        licence: its licence, for the README.
    """

    name: str
    package: str
    pattern: str
    index: int = 0
    licence: str = ""

    def path(self, root: str = "/usr/share/fonts") -> Optional[Path]:
        """The installed font file, or None."""
        found = sorted(glob.glob(f"{root}/{self.pattern}", recursive=True))
        return Path(found[0]) if found else None


# The candidate designs, one per family (regular weights). Which of them are used is decided by coverage alone
# (:func:`choose_typefaces`), never by results. Noto Sans and Noto Serif CJK are two designs of one package.
TYPEFACES = (
    Typeface("noto_sans", "fonts-noto-cjk", "**/NotoSansCJK-Regular.ttc", 2, "SIL OFL 1.1"),  # face 2: SC
    Typeface("noto_serif", "fonts-noto-cjk", "**/NotoSerifCJK-Regular.ttc", 2, "SIL OFL 1.1"),
    Typeface("arphic_ukai", "fonts-arphic-ukai", "**/ukai.ttc", 0, "Arphic Public License"),
    Typeface("arphic_uming", "fonts-arphic-uming", "**/uming.ttc", 0, "Arphic Public License"),
    Typeface("wqy_zenhei", "fonts-wqy-zenhei", "**/wqy-zenhei.ttc", 0, "GPL-2 with font exception"),
    Typeface("wqy_microhei", "fonts-wqy-microhei", "**/wqy-microhei.ttc", 0, "Apache-2.0 or GPL-3 with font exception"),
    Typeface("hanazono", "fonts-hanazono", "**/HanaMinA.ttf", 0, "SIL OFL 1.1 or Hanazono Font License"),
    Typeface("lxgw_wenkai", "fonts-lxgw-wenkai", "**/LXGWWenKai-Regular.ttf", 0, "SIL OFL 1.1"),
    Typeface("ipa_mincho", "fonts-ipafont-mincho", "**/ipam.ttf", 0, "IPA Font License"),
    Typeface("ipa_gothic", "fonts-ipafont-gothic", "**/ipag.ttf", 0, "IPA Font License"),
    Typeface("cwtex_kai", "fonts-cwtex-kai", "**/cwkai.ttf", 0, "GPL-2"),
)
MIN_COVERAGE = 0.99  # a typeface is used when it draws at least this share of the level-1 characters


def gb2312_level1() -> list:
    """The 3,755 level-1 characters of GB 2312 (rows 16-55 of the code table), in code-table order."""
    characters = []
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            try:
                characters.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:  # row 55 ends at 0xD7F9
                continue
    return characters


def _cmap(path: Path, index: int) -> set:
    from fontTools.ttLib import TTFont  # fontTools comes with matplotlib

    with TTFont(str(path), fontNumber=index, lazy=True) as font:
        return set(font.getBestCmap() or {})


class Renderer:
    """Draws characters of one typeface as 64x64 grayscale images, black on white, centred on their ink.

    Args:
        typeface: the design.
        path: its font file.
        size: the font size in pixels; the glyph's box is then scaled into the image with a margin.
    """

    def __init__(self, typeface: Typeface, path: Path, size: int = 52) -> None:
        self.typeface = typeface
        self.font = ImageFont.truetype(str(path), size, index=typeface.index)
        self.cmap = _cmap(path, typeface.index)
        self.notdef = self.render(MISSING_PROBE)

    def render(self, character: str) -> np.ndarray:
        """``(64, 64)`` uint8: the character's ink centred in the image (255 is white)."""
        canvas = Image.new("L", (2 * IMAGE_SIZE, 2 * IMAGE_SIZE), 255)
        ImageDraw.Draw(canvas).text((IMAGE_SIZE, IMAGE_SIZE), character, font=self.font, fill=0, anchor="mm")
        ink = np.asarray(canvas) < 255
        image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 255)
        if ink.any():
            rows, cols = np.nonzero(ink)
            box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
            glyph = canvas.crop(box)
            left = (IMAGE_SIZE - glyph.width) // 2
            top = (IMAGE_SIZE - glyph.height) // 2
            image.paste(glyph, (max(0, left), max(0, top)))
        return np.asarray(image)

    def draws(self, character: str) -> bool:
        """Whether the typeface really draws ``character``: in its cmap, and not blank nor its .notdef box."""
        if ord(character) not in self.cmap:
            return False
        pixels = self.render(character)
        return bool((pixels < 255).any()) and not np.array_equal(pixels, self.notdef)


def choose_typefaces(
    renderers: Sequence[Renderer], characters: Sequence[str], min_coverage: float = MIN_COVERAGE
) -> list:
    """The renderers whose typeface draws at least ``min_coverage`` of ``characters`` (a property of the font)."""
    return [r for r in renderers if sum(r.draws(c) for c in characters) >= min_coverage * len(characters)]


def installed_renderers(typefaces: Sequence[Typeface] = TYPEFACES, root: str = "/usr/share/fonts") -> list:
    """A :class:`Renderer` for each of ``typefaces`` whose font file is installed."""
    return [Renderer(t, path) for t in typefaces if (path := t.path(root)) is not None]


def build_glyphs_dataset(
    out: Path, renderers: Sequence[Renderer], characters: Optional[Sequence[str]] = None, class_stride: int = 1
) -> dict:
    """Writes ``out/train/<code point>/<typeface>.png`` and ``out/test/...``; reserved classes are never written.

    Args:
        out: the image-folder root the recipes read (``data.dataset=image_folder``).
        renderers: the chosen typefaces (see :func:`choose_typefaces`).
        characters: the candidate characters (default: GB 2312 level 1).
        class_stride: write every ``class_stride``-th class of each split (its k // 3 divisible by the stride): a
            fixed subset, sized for a CPU budget, that never looks at results.

    Returns:
        ``{"classes": kept characters, "dropped": characters some typeface does not draw, "train": n, "test": n,
        "reserved": n}`` (train and test: classes written; reserved: all of them, none written), and
        ``"typefaces"``: the names used.
    """
    if not renderers:
        raise ValueError("No typeface to render with: install Debian's CJK font packages (make glyphs does).")
    candidates = sorted(set(characters if characters is not None else gb2312_level1()), key=ord)
    kept = [c for c in candidates if all(r.draws(c) for r in renderers)]
    counts = {"classes": len(kept), "dropped": len(candidates) - len(kept), "train": 0, "test": 0, "reserved": 0}
    for index, character in enumerate(kept):
        split = split_of(index)
        if split == "reserved":
            counts["reserved"] += 1
            continue
        if (index // 3) % class_stride:
            continue
        counts[split] += 1
        folder = Path(out) / split / f"{ord(character):05x}"
        folder.mkdir(parents=True, exist_ok=True)
        for renderer in renderers:
            Image.fromarray(renderer.render(character)).convert("RGB").save(folder / f"{renderer.typeface.name}.png")
    return {**counts, "typefaces": [r.typeface.name for r in renderers]}

"""The Chinese-glyphs builder on a small case, with the DejaVu fonts matplotlib ships (so CI needs no CJK package):
the draws check (cmap, blank, .notdef), the typeface choice by coverage, the split rule, the reserved third."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from pml_vmf.data.glyphs import IMAGE_SIZE, Renderer, Typeface, build_glyphs_dataset, choose_typefaces, gb2312_level1
from tests.recipe_runs import REPO

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@pytest.fixture(scope="module")
def renderers() -> list:
    faces = [
        Typeface("dejavu_sans", "matplotlib", "DejaVuSans.ttf"),
        Typeface("dejavu_serif", "matplotlib", "DejaVuSerif.ttf"),
    ]
    return [Renderer(face, face.path(str(FONTS))) for face in faces]


def test_gb2312_level_1_is_the_3755_characters_of_rows_16_to_55():
    characters = gb2312_level1()
    assert len(characters) == len(set(characters)) == 3755
    assert characters[0] == "啊" and characters[-1] == "座"  # 0xB0A1 and 0xD7F9
    assert all(0x4E00 <= ord(c) <= 0x9FFF for c in characters)  # CJK unified ideographs


def test_a_character_counts_as_drawn_only_when_it_is_in_the_cmap_and_not_blank_nor_notdef(renderers):
    sans = renderers[0]
    assert sans.draws("A") and not sans.draws(" ")  # a space: in the cmap, but blank
    assert not sans.draws("啊")  # not in DejaVu's cmap
    sans.cmap.add(ord("啊"))  # a font whose cmap claims it but whose glyph is the .notdef box
    try:
        assert np.array_equal(sans.render("啊"), sans.notdef) and not sans.draws("啊")
    finally:
        sans.cmap.discard(ord("啊"))


def test_typefaces_are_chosen_by_coverage_alone(renderers):
    latin = list("ABCDEFGHIJ")
    assert choose_typefaces(renderers, latin) == renderers
    assert choose_typefaces(renderers, latin + ["啊"] * 10) == []  # below 99% of the characters


def test_classes_split_by_code_point_index_mod_3_and_the_reserved_third_is_never_written(renderers, tmp_path):
    characters = list("LKJIHGFEDCBA") + ["啊"]  # unsorted on purpose; the last is drawn by neither font
    counts = build_glyphs_dataset(tmp_path, renderers, characters)
    assert counts == {
        "classes": 12,
        "dropped": 1,
        "train": 4,
        "test": 4,
        "reserved": 4,
        "typefaces": ["dejavu_sans", "dejavu_serif"],
    }
    folder = {split: sorted(chr(int(p.name, 16)) for p in (tmp_path / split).iterdir()) for split in ("train", "test")}
    assert folder == {"train": list("ADGJ"), "test": list("BEHK")}  # C, F, I, L (k % 3 == 2) are nowhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "train"]
    image = Image.open(tmp_path / "train" / f"{ord('A'):05x}" / "dejavu_serif.png")
    pixels = np.asarray(image)
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB" and pixels.max() == 255 and pixels.min() < 64
    rows, cols = np.nonzero(pixels[..., 0] < 128)  # the ink is centred
    assert (
        abs((rows.min() + rows.max()) / 2 - IMAGE_SIZE / 2) <= 1.5
        and abs((cols.min() + cols.max()) / 2 - IMAGE_SIZE / 2) <= 1.5
    )
    assert sorted(p.name for p in (tmp_path / "test" / f"{ord('B'):05x}").iterdir()) == [
        "dejavu_sans.png",
        "dejavu_serif.png",
    ]


def test_a_class_stride_keeps_every_nth_class_of_each_split(renderers, tmp_path):
    counts = build_glyphs_dataset(tmp_path, renderers, list("ABCDEFGHIJKL"), class_stride=2)
    assert (counts["train"], counts["test"], counts["reserved"]) == (2, 2, 4)
    assert sorted(chr(int(p.name, 16)) for p in (tmp_path / "train").iterdir()) == ["A", "G"]  # k // 3 = 0, 2


def test_no_typeface_is_an_error_that_says_how_to_get_one(tmp_path):
    with pytest.raises(ValueError, match="install Debian's CJK font packages"):
        build_glyphs_dataset(tmp_path, [], list("AB"))


def test_the_docs_list_the_glyphs_config_and_its_licences():
    assert "| `glyphs_pretrained.yaml` |" in (REPO / "docs" / "recipes.md").read_text()
    readme = (REPO / "docs" / "benchmarks.md").read_text()
    assert "make glyphs" in readme
    assert (REPO / "recipes" / "configs" / "glyphs_pretrained.yaml").is_file()
    for package in ("fonts-noto-cjk", "fonts-arphic-ukai", "fonts-wqy-zenhei", "fonts-hanazono", "fonts-lxgw-wenkai"):
        assert package in readme

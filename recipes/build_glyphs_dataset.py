"""Builds the Chinese-glyphs retrieval set (image folder) from Debian's CJK font packages.

    make glyphs                                   # installs the fonts where apt is usable, then runs this
    python recipes/build_glyphs_dataset.py --out data/glyphs --class-stride 3

One class per level-1 character of GB 2312 that every chosen typeface draws, one 64x64 image per typeface (black on
white, centred): --out/train/<code point>/<typeface>.png and --out/test/... . A typeface is chosen when its font is
installed and draws at least 99% of the 3,755 characters (a property of the font, decided before any training).
Classes sorted by code point with index k: k % 3 == 0 train, k % 3 == 1 test, k % 3 == 2 reserved for an
independent evaluation and never written. --class-stride N writes every N-th class of each split: 3 keeps the
training set within twice the emoji set's images, the CPU budget of the benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pml_vmf.data.glyphs import (
    MIN_COVERAGE,
    TYPEFACES,
    build_glyphs_dataset,
    choose_typefaces,
    gb2312_level1,
    installed_renderers,
)


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/glyphs"), help="the image-folder root to write")
    parser.add_argument("--class-stride", type=int, default=1, help="write every N-th class of each split")
    parser.add_argument("--fonts", default="/usr/share/fonts", help="where the font packages install their files")
    args = parser.parse_args(argv)
    if args.class_stride < 1:
        parser.error(f"--class-stride is at least 1, got {args.class_stride}.")
    if args.out.exists() and any(args.out.iterdir()):
        print(f"build_glyphs_dataset.py: {args.out} is not empty: remove it or choose another --out.", file=sys.stderr)
        return 2
    characters = gb2312_level1()
    installed = installed_renderers(TYPEFACES, args.fonts)
    chosen = choose_typefaces(installed, characters)
    missing = [t.package for t in TYPEFACES if t.name not in {r.typeface.name for r in installed}]
    for renderer in installed:
        drawn = sum(renderer.draws(c) for c in characters)
        verdict = "used" if renderer in chosen else f"not used (below {MIN_COVERAGE:.0%})"
        print(
            f"{renderer.typeface.name:<14} {renderer.typeface.package:<22} draws {drawn} of {len(characters)}: {verdict}"
        )
    if missing:
        print(f"not installed: {', '.join(sorted(set(missing)))}")
    try:
        counts = build_glyphs_dataset(args.out, chosen, characters, class_stride=args.class_stride)
    except ValueError as error:
        print(f"build_glyphs_dataset.py: {error}", file=sys.stderr)
        return 2
    print(f"{counts['classes']} characters drawn by all {len(chosen)} typefaces ({counts['dropped']} dropped); written with "
          f"class stride {args.class_stride}: {counts['train']} train, {counts['test']} test classes of {len(chosen)} "
          f"images; {counts['reserved']} reserved (not written) -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Builds the emoji retrieval set (image folder) from the npm emoji-datasource-* 16.0.0 tarballs.

    python recipes/build_emoji_dataset.py --npm-dir data/npm --out data/emoji

Fetches the four tarballs with `npm pack` into --npm-dir when they are not there (about 340 MB), then writes
--out/train/<code>/<vendor>.png and --out/test/<code>/<vendor>.png. Classes with k % 3 == 2 (k: index in code order)
are reserved for an independent evaluation and are never written. Licences differ by vendor: Apple, not for
commercial use; Google (Noto), Apache-2.0; Twitter (Twemoji), CC-BY-4.0; Facebook, unclear.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from pml_vmf.data.emoji import NPM_VERSION, VENDORS, build_emoji_dataset


def fetch_tarballs(npm_dir: Path) -> dict:
    npm_dir.mkdir(parents=True, exist_ok=True)
    tarballs = {}
    for vendor in VENDORS:
        path = npm_dir / f"emoji-datasource-{vendor}-{NPM_VERSION}.tgz"
        if not path.is_file():
            subprocess.run(
                ["npm", "pack", f"emoji-datasource-{vendor}@{NPM_VERSION}", "--silent"], cwd=npm_dir, check=True
            )
        tarballs[vendor] = path
    return tarballs


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npm-dir", type=Path, default=Path("data/npm"), help="where the npm tarballs are (or go)")
    parser.add_argument("--out", type=Path, default=Path("data/emoji"), help="the image-folder root to write")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} is not empty: remove it or choose another --out.", file=sys.stderr)
        return 2
    counts = build_emoji_dataset(fetch_tarballs(args.npm_dir), args.out)
    print(
        f"{counts['classes']} classes drawn by all of {', '.join(VENDORS)}: {counts['train']} train, "
        f"{counts['test']} test, {counts['reserved']} reserved (not written) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

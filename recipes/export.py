"""Export a trained run as a self-contained model folder: ``python recipes/export.py --run runs/NAME --out FOLDER``.

The folder holds ``embedder.json`` (timm backbone, embedding width, eval transform, class names, vMF kappa) and
``model.safetensors`` (plus ``class_means.safetensors`` for vMF); ``pml_vmf.load_embedder(FOLDER)`` loads it without
the training config. ``--format torchscript onnx`` adds ``model.torchscript.pt`` and ``model.onnx``; each copy is
checked against the eager model on a batch of real images (``--check-images``, default: the run's test images where
its dataset is found) and the export fails, writing nothing, when they differ by more than ``--atol``. The folder is
written under a temporary name and renamed into place once checked; an existing one is left as it is unless
``--overwrite`` (then it is replaced whole, never mixed with the old export's files).

    python recipes/export.py --run runs/emoji-pretrained-vmf --out exports/emoji --format safetensors torchscript onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pml_vmf.data import DatasetNotFoundError
from pml_vmf.data.image_folder import list_images
from pml_vmf.files import check_out_folder
from pml_vmf.inference import ModelNotFoundError, load_embedder
from pml_vmf.inference.export import EXPORT_FILES, FORMATS, ExportCheckError, export_embedder

CHECK_IMAGES = 8


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a run folder (or its model/ folder)")
    parser.add_argument("--out", required=True, type=Path, help="the export folder to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out folder (once the new export is checked)"
    )
    parser.add_argument(
        "--format", nargs="+", default=["safetensors"], choices=FORMATS, help="safetensors is always written"
    )
    parser.add_argument("--check-images", type=Path, help="a folder of real images for the numeric check")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest difference of unit embeddings accepted")
    args = parser.parse_args(argv)
    try:  # before the long work, not after
        check_out_folder(args.out, args.overwrite, "export", EXPORT_FILES)
    except FileExistsError as error:
        print(f"export.py: {error}", file=sys.stderr)
        return 2
    try:
        embedder = load_embedder(args.run)
        images = list_images(args.check_images or _test_images_of(args.run))[:CHECK_IMAGES]
        batch = embedder.transform_images(images)
        differences = export_embedder(embedder, args.out, args.format, batch, atol=args.atol, overwrite=args.overwrite)
    except ExportCheckError as error:
        print(f"export.py: {error}", file=sys.stderr)
        return 1
    except (ModelNotFoundError, DatasetNotFoundError, ValueError, ImportError, OSError) as error:
        print(f"export.py: {error}", file=sys.stderr)
        return 2
    for name, difference in differences.items():
        print(f"{name}: largest difference from the eager model on {len(batch)} real images {difference:.2e}")
    print(f"Exported to {args.out}: load it with pml_vmf.load_embedder({str(args.out)!r}).")
    return 0


def _test_images_of(run: Path) -> Path:
    """The run's test images, from its config, where they are on this machine."""
    from pml_vmf.training import load_config

    config_file = run / "config.yaml" if (run / "config.yaml").is_file() else run.parent / "config.yaml"
    root = load_config(config_file, saved=True).data.root if config_file.is_file() else None
    for candidate in (Path(root) / "test", Path(root)) if root else ():
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(
        f"The run's dataset folder ({root}) is not here: give real images with --check-images FOLDER."
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

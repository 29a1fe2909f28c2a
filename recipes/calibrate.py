"""Calibrate a vMF model's class probabilities and its unknown-class threshold on held-out images of its classes.

    python recipes/calibrate.py --model runs/NAME --known FOLDER --out exports/calibrated [--unknown FOLDER]

``--known`` holds images of the model's training classes that it did not train on, one sub-folder per class, named
as the classes (``embedder.json``'s ``class_names``). The script fits the temperature of the vMF posterior (with the
loss's one kappa, or each class with its own concentration, ``--kappas per_class``) by the negative log-likelihood of
these images, and sets the threshold of the open-set score (``--score``, the cosine to the nearest class mean unless
told) that accepts a share ``--tpr`` of them.
Both are written into the model folder's ``embedder.json`` (``open_set``): ``load_embedder(...).classify`` and
``recipes/search.py --classify`` then answer "unknown" for a query below the threshold. With ``--unknown`` (images
of classes the model never saw, e.g. held-out validation classes), it also reports how well the score tells them
apart (AUROC) and the share of them the threshold accepts (the false-positive rate).

The calibrated model is written to ``--out`` (a new folder, or a model folder replaced whole with ``--overwrite``:
``--out runs/NAME/model --overwrite`` calibrates a run's own model in place).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCORES = ("vmf_log_likelihood", "vmf_max_posterior", "max_cosine")  # pml_vmf.open_set.SCORES, without torch


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a run folder, its model/ folder or an export")
    parser.add_argument("--known", required=True, type=Path, help="held-out images of the model's classes, by class")
    parser.add_argument("--unknown", type=Path, help="images of classes the model never saw, to report rejection")
    parser.add_argument("--out", required=True, type=Path, help="the calibrated model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder at --out")
    parser.add_argument("--tpr", type=float, default=0.95, help="share of known-class images to accept")
    parser.add_argument("--score", choices=SCORES, default="max_cosine", help="the open-set score")
    parser.add_argument("--kappas", choices=("shared", "per_class"), default="shared",
                        help="the loss's one kappa, or each class's own concentration")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.tpr <= 1:
        parser.error(f"--tpr is the share of known-class images to accept, in (0, 1]; got {args.tpr}.")
    from pml_vmf.data import DatasetNotFoundError
    from pml_vmf.files import check_out_folder
    from pml_vmf.inference import ModelNotFoundError, load_embedder
    from pml_vmf.models import CONFIG_FILE, MEANS_FILE, WEIGHTS_FILE

    try:
        check_out_folder(args.out, args.overwrite, "model", (CONFIG_FILE, WEIGHTS_FILE, MEANS_FILE))
        embedder = load_embedder(args.model)
        known, labels = _known_images(embedder, args)
        before = _calibration_measures(embedder, known, labels, args.kappas)
        settings = embedder.calibrate(known, labels, tpr=args.tpr, score=args.score, kappas=args.kappas)
        after = _calibration_measures(embedder, known, labels, args.kappas)
        report = _rejection_report(embedder, known, args) if args.unknown is not None else None
        embedder.save(args.out, overwrite=args.overwrite)
    except (ModelNotFoundError, DatasetNotFoundError, FileExistsError, ValueError, OSError) as error:
        print(f"calibrate.py: {error}", file=sys.stderr)
        return 2
    print(f"{len(labels)} known-class images of {int(labels.unique().numel())} classes, kappas {args.kappas}:")
    print(f"  temperature {settings['temperature']:.4g}: negative log-likelihood {before['nll']:.4f} -> "
          f"{after['nll']:.4f}, expected calibration error {before['ece']:.4f} -> {after['ece']:.4f}")  # fmt: skip
    print(f"  unknown below {args.score} {settings['threshold']:.6g}, which accepts {args.tpr:.0%} of them")
    if report is not None:
        print(f"  {report}")
    print(
        f"Calibrated model written to {args.out}: load_embedder({str(args.out)!r}).classify answers unknown below it."
    )
    return 0


def _known_images(embedder, args: argparse.Namespace) -> tuple:
    """The embeddings of ``--known`` and their labels, by class folder name."""
    import torch

    from pml_vmf.data import DatasetNotFoundError

    names = embedder.config.class_names
    if not names:
        raise ValueError("The model records no class names, so --known's class folders cannot be matched to it.")
    root = args.known
    if not root.is_dir():
        raise DatasetNotFoundError(f"--known {root} does not exist: expected {root}/<class name>/<image> files.")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    foreign = [name for name in folders if name not in names]
    if foreign:
        raise ValueError(
            f"--known {root} holds {len(foreign)} folder(s) that are not classes of the model "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}): put images of unseen classes in --unknown."
        )
    embeddings, paths = embedder.embed_folder(root, batch_size=args.batch_size, num_workers=args.num_workers)
    index = {name: label for label, name in enumerate(names)}
    labels = torch.tensor([index[Path(path).relative_to(root).parts[0]] for path in paths])
    return embeddings, labels


def _calibration_measures(embedder, embeddings, labels, kappas: str) -> dict:
    from pml_vmf.evaluation.open_set_metrics import expected_calibration_error, negative_log_likelihood

    log_posterior = embedder.class_model(kappas).log_posterior(embeddings)
    return {
        "nll": negative_log_likelihood(log_posterior, labels),
        "ece": expected_calibration_error(log_posterior.exp(), labels),
    }


def _rejection_report(embedder, known, args: argparse.Namespace) -> str:
    """AUROC of the known images against ``--unknown`` by the calibrated score, and the share of unknown images the
    threshold accepts."""
    from pml_vmf.evaluation.open_set_metrics import auroc

    unknown, _ = embedder.embed_folder(args.unknown, batch_size=args.batch_size, num_workers=args.num_workers)
    score, threshold = args.score, embedder.config.open_set["threshold"]
    known_scores, unknown_scores = (embedder.open_set_scores(e)[score] for e in (known, unknown))
    accepted = float((unknown_scores >= threshold).double().mean())
    return (
        f"{len(unknown)} images of unseen classes: AUROC {auroc(known_scores, unknown_scores):.4f}; the threshold "
        f"accepts {accepted:.1%} of them (the false-positive rate at {args.tpr:.0%} of the known accepted)"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

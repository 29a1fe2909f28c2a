"""The raw-pixels baseline row of a results table: the test images as the recipe's eval transform gives them,
flattened, scored by the same evaluation as the trained networks (cosine retrieval; nearest class mean of the
training images on closed sets).

    python benchmarks/raw_pixel_baseline.py --config recipes/configs/emoji_pretrained.yaml --data-root data/emoji

A trained network that does not beat this row has learned nothing a pixel comparison does not already give. Prints
the metrics as JSON and, with --out, appends them to that CSV. Same key=value overrides as recipes/train.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from pml_vmf.evaluation import nearest_mean_accuracy
from pml_vmf.files import read_rows, write_rows
from pml_vmf.training import RecipeRun, load_config


def raw_pixel_metrics(config_path: str, overrides: list) -> dict:
    """Evaluates flattened eval-transformed pixels on the config's test split; see the module docstring."""
    with tempfile.TemporaryDirectory() as scratch:  # the run folder RecipeRun wants; nothing is kept
        config = load_config(
            config_path, [*overrides, "train.epochs=0", f"run.output_dir={scratch}", "run.name=raw-pixels"]
        )
        run = RecipeRun(config)
        evaluator = run.evaluator
        evaluator.model = torch.nn.Flatten()  # the "embedding" is the normalised image itself
        metrics = evaluator.evaluate("query", "reference" if run.splits.reference is not None else None)
        if run.splits.test_classes_are_train_classes:
            query, labels = evaluator.embeddings["query"]
            metrics["nearest_mean_accuracy"] = nearest_mean_accuracy(
                query, labels, evaluator.training_set_means().means.cpu()
            )
        run.accelerator.end_training()
    return metrics


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--out", type=Path, help="a CSV to append the row to")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    try:
        metrics = raw_pixel_metrics(args.config, overrides)
    except (ValueError, FileNotFoundError) as error:
        print(f"raw_pixel_baseline.py: {error}", file=sys.stderr)
        return 2
    row = {"name": "raw-pixels", "config": args.config, "overrides": " ".join(overrides), **metrics}
    print(json.dumps(row, indent=1))
    if args.out is not None:
        write_rows(args.out, [*read_rows(args.out), row])  # the union of the rows' columns, atomically
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

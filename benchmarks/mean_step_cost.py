"""What vMF's mean step costs: where a full pass's time goes, and seconds per epoch of each mean schedule against
multi-similarity's, measured side by side in one process.

Part 1 times one full pass over the training set (eval transform, every image once) in pieces: the loader alone
(decoding, resizing, collating), the forward alone (on the loader's batches held in memory), the pass as the recipe
runs it, and the pass again from the decoded-image cache (``data.cache_eval_images``) once it is filled. Part 2
trains every variant from the same start (no validation), one epoch each in turn, for as many rounds as the largest
N of the ``vmf_every_N`` variants (at least ``--epochs``), and reports each one's mean seconds per epoch, the mean
step included, and the ratio to multi-similarity's. Run it with N a divisor of the rounds, so that the mean holds a
whole number of passes.

    python benchmarks/mean_step_cost.py --config recipes/configs/emoji_pretrained.yaml --data-root data/emoji \\
        --out benchmarks/results/mean_step_cost/cpu.csv

Variants (``--variants``): ``multi_similarity``; ``vmf_full_pass`` (a pass after every epoch, the paper's
schedule); ``vmf_miner`` (the miner's sums of each epoch's own training embeddings, no pass); ``vmf_every_N``
(the miner, and a pass after every N-th epoch: ``loss.means.full_pass_every=N``); ``--set`` applies to every variant.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pml_vmf.files import write_rows
from pml_vmf.training import RecipeRun, load_config

# Each variant sets every mean-step key, so that it measures what its name says whatever the config's own schedule.
VARIANTS = {
    "multi_similarity": ["loss.name=multi_similarity"],
    "vmf_full_pass": ["loss.name=vmf", "loss.means.source=full_pass", "loss.means.full_pass_every=null"],
    "vmf_miner": [
        "loss.name=vmf",
        "loss.means.source=miner",
        "loss.means.publish_every=null",
        "loss.means.full_pass_every=null",
    ],
}


def variant_overrides(name: str) -> list:
    if name.startswith("vmf_every_"):
        every = int(name.removeprefix("vmf_every_"))
        return [*VARIANTS["vmf_miner"], f"loss.means.full_pass_every={every}"]  # the last value wins
    if name not in VARIANTS:
        raise SystemExit(f"--variants: unknown {name!r}; choose from {', '.join(VARIANTS)} or vmf_every_N.")
    return VARIANTS[name]


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def full_pass_pieces(run: RecipeRun) -> dict:
    """Seconds of one pass's pieces: loader alone, forward alone, the recipe's pass (cold cache where it is on)."""
    loader = run.evaluator.loaders["train"]
    batches: list = []
    pieces = {"loader_s": timed(lambda: batches.extend(images for images, _, _ in loader))}
    model = run.model.eval()
    with torch.no_grad(), run.accelerator.autocast():
        pieces["forward_s"] = timed(lambda: [model(images.to(run.device)) for images in batches])
    pieces["pass_s"] = timed(run.evaluator.training_set_means)
    pieces["pass_again_s"] = timed(run.evaluator.training_set_means)  # from the cache when it is on
    pieces["images"] = sum(len(images) for images in batches)
    return pieces


def interleaved_epoch_seconds(config_path: str, variants: dict, rounds: int, output_dir: str) -> dict:
    """Seconds of each training epoch (the mean step included) of every variant, from the config's start. The runs
    are built first and then alternate, one epoch each per round, each first in turn, so that a drift of a shared
    machine and the order hit all alike.
    """
    runs = {}
    for name, overrides in variants.items():
        runs[name] = RecipeRun(
            load_config(config_path, [*overrides, f"run.output_dir={output_dir}", f"run.name={name}"])
        )
        runs[name].means.before_training(0)
    seconds: dict = {name: [] for name in runs}
    names = list(runs)
    for epoch in range(rounds):
        for name in names[epoch % len(names) :] + names[: epoch % len(names)]:  # each variant first in turn
            seconds[name].append(runs[name].train_epoch(epoch)["train_seconds"])
            print(f"round {epoch}: {name} {seconds[name][-1]:.1f} s", flush=True)
    runs.clear()
    gc.collect()  # the runs' loader workers stop
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument(
        "--variants", nargs="+", default=["multi_similarity", "vmf_full_pass", "vmf_miner", "vmf_every_4"]
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="the least number of rounds (one epoch of each variant per round)"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], help="config overrides for every variant, e.g. run.channels_last=true"
    )
    parser.add_argument("--out", type=Path, help="CSV of the measurements")
    args = parser.parse_args()
    base = [f"data.root={args.data_root}", "data.val_fraction=0.0", "optim.head_warmup_epochs=0", *args.set]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    )
    rows = []
    with tempfile.TemporaryDirectory() as output_dir:
        for cache in ("false", "true"):
            run = RecipeRun(
                load_config(
                    args.config,
                    [
                        *base,
                        f"data.cache_eval_images={cache}",
                        f"run.output_dir={output_dir}",
                        f"run.name=pass-{cache}",
                    ],
                )
            )
            pieces = full_pass_pieces(run)
            del run
            gc.collect()
            print(f"full pass, cache_eval_images={cache}: {pieces}", flush=True)
            rows.append({"part": "full_pass", "variant": f"cache_eval_images={cache}", **pieces})
        rounds = max(
            [args.epochs, *(int(n.removeprefix("vmf_every_")) for n in args.variants if n.startswith("vmf_every_"))]
        )
        variants = {name: [*base, *variant_overrides(name)] for name in args.variants}
        for name, seconds in interleaved_epoch_seconds(args.config, variants, rounds, output_dir).items():
            rows.append(
                {
                    "part": "epoch",
                    "variant": name,
                    "mean_epoch_s": statistics.mean(seconds),
                    "epochs_s": " ".join(f"{s:.2f}" for s in seconds),
                }
            )
    reference = next((r["mean_epoch_s"] for r in rows if r["variant"] == "multi_similarity"), None)
    print(f"\nmachine: {machine}; config {args.config} {' '.join(args.set)}")
    print("| variant | s / epoch (mean) | x multi-similarity |\n|---|---:|---:|")
    for row in rows:
        if row["part"] == "epoch":
            row["ratio_to_multi_similarity"] = row["mean_epoch_s"] / reference if reference else ""
            ratio = f"{row['ratio_to_multi_similarity']:.2f}" if reference else ""
            print(f"| {row['variant']} | {row['mean_epoch_s']:.1f} | {ratio} |")
        row.update(machine=machine, config=args.config, overrides=" ".join(args.set))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()

"""What a PML user gets who swaps in a loss and tunes nothing: every PML loss at its library defaults, in PML's own
training loop, against ``VMFLoss(num_classes, embedding_size)`` + ``GlobalMeanMiner(loss)`` at theirs.

The loop is PML's canonical one on scikit-learn's digits (offline, seconds a run): an MLP 64-128-32, Adam at 1e-3
over the model and the loss's parameters (proxies, learned margins), batch 64, 300 steps, then
``GlobalEmbeddingSpaceTester`` + ``AccuracyCalculator(k="max_bin_count")`` on a split compared with itself.

Splits (``--split``):

* ``digits``: 70/30 of every class (the split is fixed; seeds change the initialisation and the batches).
* ``digits_disjoint``: classes 0-4 train, classes 5-9 test (retrieval of unseen classes).

``--phase test`` trains on the whole training part and scores the test part; ``--phase val`` trains on 80% of the
training part's images and scores the other 20%: the numbers that choose a default (never the test part).
Pair losses get the miner PML's README pairs with ``TripletMarginLoss`` (``MultiSimilarityMiner()``) where the
README or the loss's paper pairs one (triplet, multi-similarity); ``triplet_no_miner`` is the loss alone. Every
other loss runs without a miner. One CSV row per (split, phase, loss, seed), appended as it finishes; a rerun skips
the rows already there.

    python benchmarks/swap_in_defaults.py --split digits digits_disjoint --phase test --seeds 0 1 2 3 4 \\
        --out benchmarks/results/swap_in_defaults/digits.csv
    python benchmarks/swap_in_defaults.py --phase val --losses vmf vmf_kappa2_margin0 vmf_kappa4_margin0 --out ...val.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import torch
from pytorch_metric_learning import losses, miners, testers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import GlobalMeanMiner, VMFLoss
from pml_vmf.files import append_rows, read_rows

EMBEDDING_SIZE, STEPS, BATCH_SIZE, LR = 32, 300, 64, 1e-3
METRICS = ("mean_average_precision_at_r", "precision_at_1", "r_precision")
FIELDS = ["split", "phase", "loss", "seed", "status", "num_classes", "kappa", *METRICS, "seconds"]


def _vmf(**kwargs) -> Callable:
    def build(num_classes: int):
        loss = VMFLoss(num_classes, EMBEDDING_SIZE, **kwargs)
        return loss, GlobalMeanMiner(loss)

    return build


def _pml(loss_cls, miner_cls=None, takes_classes: bool = False, **kwargs) -> Callable:
    def build(num_classes: int):
        extra = {"num_classes": num_classes, "embedding_size": EMBEDDING_SIZE} if takes_classes else {}
        return loss_cls(**extra, **kwargs), (miner_cls() if miner_cls else None)

    return build


# Library defaults throughout; the other vmf_* rows are the settings that chose vMF's own defaults on validation
# (its margin, and fixed kappas against "auto"). The CSV's vmf_adaptive rows (AdaCos's dynamic scale) were measured
# with the code of commit e34f2f1, which had it.
LOSSES = {
    "vmf": _vmf(),
    "vmf_margin0": _vmf(margin=0.0),
    **{f"vmf_kappa{k:g}_margin0": _vmf(kappa=k, margin=0.0) for k in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)},
    "triplet": _pml(losses.TripletMarginLoss, miners.MultiSimilarityMiner),
    "triplet_no_miner": _pml(losses.TripletMarginLoss),
    "multi_similarity": _pml(losses.MultiSimilarityLoss, miners.MultiSimilarityMiner),
    "contrastive": _pml(losses.ContrastiveLoss),
    "circle": _pml(losses.CircleLoss),
    "supcon": _pml(losses.SupConLoss),
    "ntxent": _pml(losses.NTXentLoss),
    "generalized_lifted_structure": _pml(losses.GeneralizedLiftedStructureLoss),
    "lifted_structure": _pml(losses.LiftedStructureLoss),
    "nca": _pml(losses.NCALoss),
    "fast_ap": _pml(losses.FastAPLoss),
    "snr_contrastive": _pml(losses.SignalToNoiseRatioContrastiveLoss),
    "tuplet_margin": _pml(losses.TupletMarginLoss),
    "angular": _pml(losses.AngularLoss),
    "n_pairs": _pml(losses.NPairsLoss),
    "margin": _pml(losses.MarginLoss),
    "histogram": _pml(losses.HistogramLoss),
    "dynamic_soft_margin": _pml(losses.DynamicSoftMarginLoss),
    "threshold_consistent_margin": _pml(losses.ThresholdConsistentMarginLoss),
    "pnp": _pml(losses.PNPLoss),
    "proxy_anchor": _pml(losses.ProxyAnchorLoss, takes_classes=True),
    "proxy_nca": _pml(losses.ProxyNCALoss, takes_classes=True),
    "normalized_softmax": _pml(losses.NormalizedSoftmaxLoss, takes_classes=True),
    "arcface": _pml(losses.ArcFaceLoss, takes_classes=True),
    "cosface": _pml(losses.CosFaceLoss, takes_classes=True),
    "sphereface": _pml(losses.SphereFaceLoss, takes_classes=True),
    "large_margin_softmax": _pml(losses.LargeMarginSoftmaxLoss, takes_classes=True),
    "sub_center_arcface": _pml(losses.SubCenterArcFaceLoss, takes_classes=True),
    "soft_triple": _pml(losses.SoftTripleLoss, takes_classes=True),
    "p2s_grad": lambda num_classes: (losses.P2SGradLoss(descriptors_dim=EMBEDDING_SIZE, num_classes=num_classes), None),
}
LOSSES = {name: build for name, build in LOSSES.items() if build is not None}
BASELINES = [name for name in LOSSES if not name.startswith("vmf")]


def split_digits(split: str, phase: str) -> tuple[tuple, tuple]:
    """``((train inputs, labels), (eval inputs, labels))`` of one split and phase; labels remapped to 0..C-1."""
    inputs, labels = load_digits(return_X_y=True)
    inputs = torch.tensor(inputs, dtype=torch.float32) / 16.0
    labels = torch.tensor(labels)
    generator = torch.Generator().manual_seed(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        if split == "digits":
            cut = round(0.7 * len(idx))
            train_idx.append(idx[:cut])
            test_idx.append(idx[cut:])
        elif c < 5:
            train_idx.append(idx)
        else:
            test_idx.append(idx)
    train_idx = torch.cat(train_idx)
    if phase == "val":  # 20% of every training class's images, held out of training
        held, kept = [], []
        for c in labels[train_idx].unique():
            idx = train_idx[labels[train_idx] == c]
            cut = round(0.2 * len(idx))
            held.append(idx[:cut])
            kept.append(idx[cut:])
        train_idx, eval_idx = torch.cat(kept), torch.cat(held)
    else:
        eval_idx = torch.cat(test_idx)
    eval_labels = labels[eval_idx]
    eval_labels = torch.searchsorted(eval_labels.unique(), eval_labels)
    return (inputs[train_idx], labels[train_idx]), (inputs[eval_idx], eval_labels)


def model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, EMBEDDING_SIZE))


def train_and_test(loss_name: str, train: tuple, evaluation: tuple, seed: int) -> dict:
    """PML's loop at the loss's defaults; returns the tester's metrics on ``evaluation`` (compared with itself)."""
    torch.manual_seed(seed)
    net = model()
    num_classes = int(train[1].max()) + 1
    loss_func, miner = LOSSES[loss_name](num_classes)
    optimizer = torch.optim.Adam([*net.parameters(), *loss_func.parameters()], lr=LR)
    loader = DataLoader(TensorDataset(*train), batch_size=BATCH_SIZE, shuffle=True, drop_last=True)
    step = 0
    while step < STEPS:
        for inputs, labels in loader:
            embeddings = net(inputs)
            indices_tuple = miner(embeddings, labels) if miner is not None else None
            loss = loss_func(embeddings, labels, indices_tuple)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == STEPS:
                break
    return {**evaluate(net, evaluation), "kappa": getattr(loss_func, "kappa", "")}


def evaluate(net: torch.nn.Module, evaluation: tuple) -> dict:
    tester = testers.GlobalEmbeddingSpaceTester(
        accuracy_calculator=AccuracyCalculator(include=METRICS, k="max_bin_count"),
        dataloader_num_workers=0,
        batch_size=256,
    )
    accuracies = tester.test({"eval": TensorDataset(*evaluation)}, 0, net)["eval"]
    return {metric: accuracies[f"{metric}_level0"] for metric in METRICS}


def run(
    splits: Sequence[str], phases: Sequence[str], loss_names: Sequence[str], seeds: Sequence[int], out: Path
) -> None:
    done = {(r["split"], r["phase"], r["loss"], r["seed"]) for r in read_rows(out)}
    for split in splits:
        for phase in phases:
            train, evaluation = split_digits(split, phase)
            for loss_name in ["untrained", *loss_names]:
                for seed in seeds:
                    if (split, phase, loss_name, str(seed)) in done:
                        continue
                    row = {
                        "split": split,
                        "phase": phase,
                        "loss": loss_name,
                        "seed": seed,
                        "num_classes": int(train[1].max()) + 1,
                    }
                    start = time.perf_counter()
                    try:
                        if loss_name == "untrained":
                            torch.manual_seed(seed)
                            result = {**evaluate(model(), evaluation), "kappa": ""}
                        else:
                            result = train_and_test(loss_name, train, evaluation, seed)
                        row.update(result, status="ok")
                    except Exception as error:  # a loss that cannot run here is a row that says why
                        row.update(status=f"failed: {type(error).__name__}: {str(error).splitlines()[0][:150]}")
                    row["seconds"] = round(time.perf_counter() - start, 2)
                    append_rows(out, [row], FIELDS)
                    score = row.get("mean_average_precision_at_r", "")
                    print(f"{split} {phase} {loss_name} seed {seed}: {row['status']} MAP@R {score}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--split", nargs="+", default=["digits", "digits_disjoint"], choices=["digits", "digits_disjoint"]
    )
    parser.add_argument("--phase", nargs="+", default=["test"], choices=["val", "test"])
    parser.add_argument("--losses", nargs="+", default=["vmf", *BASELINES], choices=sorted(LOSSES), metavar="LOSS")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: two runs side by side)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to append to")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("PML").setLevel(logging.WARNING)
    run(args.split, args.phase, args.losses, args.seeds, args.out)


if __name__ == "__main__":
    sys.exit(main())

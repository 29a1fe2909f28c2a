"""Does vMF know what it has not seen? Rejection of unseen classes and calibration of the class posterior, vMF's
scores against the usual out-of-distribution scores, on every loss's own embeddings.

Each loss trains on classes 0-4 (PML's loop: Adam at 1e-3 over the model and the loss's parameters, the loss's
library defaults, its usual miner). Four parts of the data, none used twice:

* ``train``: images of classes 0-4 that train the network; with the trained network they also give each class's
  mean and spread (every score below that needs class means takes them from here, for every loss alike) and the
  reference set of the k-NN score;
* ``calibration``: held-out images of classes 0-4 that fit each posterior's temperature (never the test images);
* ``known``: other held-out images of classes 0-4, the known queries;
* ``unknown``: every test image of classes 5-9, the queries of no known class.

Open-set scores (higher = looks known), on each loss's own unit embeddings:

* ``vmf_log_likelihood``: ``max_c log f(z | c)``, each class a vMF with its own concentration (from the bias-corrected
  mean resultant length of its training embeddings), the normaliser included (:class:`pml_vmf.open_set.VMFClassModel`);
* ``vmf_max_posterior``: the largest class probability of that model, temperature-calibrated;
* ``max_cosine``: the cosine to the nearest class mean (what a shared kappa ranks by);
* ``knn``: minus the distance to the k-th nearest training embedding (Sun et al., "Out-of-Distribution Detection
  with Deep Nearest Neighbors", ICML 2022; k = 50 as theirs for Fashion-MNIST's 27,000 training images, 5 for digits'
  540);
* ``msp`` and ``energy``: the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017) and the energy
  ``logsumexp`` (Liu et al., NeurIPS 2020) of the loss's own logits, for losses that have a classifier (vMF's
  ``kappa * cos`` to its means, the proxies of NormalizedSoftmax and ArcFace, softmax's linear layer).

Rejection: AUROC and FPR at 95% TPR of ``known`` against ``unknown``. Calibration on ``known``: expected calibration
error (15 bins) and negative log-likelihood of each posterior, after a temperature fitted on ``calibration``:
``vmf_per_class`` and ``vmf_shared`` (the vMF mixture with per-class or one concentration) for every loss's
embeddings, and ``logits`` (the loss's own classifier) where it has one.

Data sets: ``fashion_mnist`` (Debian's or torchvision's IDX files; a 4-convolution CNN, 64-d, 2 epochs of batch 128;
calibration and known: 1,000 held-out training images of each class 0-4 split in two; unknown: the 5,000 test images
of classes 5-9); ``digits`` (scikit-learn's 8x8 digits, the MLP 64-128-32 of PML's loop, 300 steps of batch 64; 20%
and 20% of each class 0-4 held out).

One CSV row per (data set, loss, seed, measure), appended as each run finishes; a rerun skips the runs already there.

    python benchmarks/open_set.py --data digits fashion_mnist --seeds 0 1 2 --out benchmarks/results/open_set/rows.csv
    python benchmarks/open_set.py --summary benchmarks/results/open_set/rows.csv
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from paired_seeds import paired_difference
from pytorch_metric_learning import losses, miners
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import GlobalMeanMiner, VMFLoss, estimate_class_means
from pml_vmf.evaluation import FaissIndexKNN
from pml_vmf.evaluation.open_set_metrics import auroc, expected_calibration_error, fpr_at_tpr, negative_log_likelihood
from pml_vmf.files import append_rows, read_rows
from pml_vmf.open_set import VMFClassModel, fit_temperature
from pml_vmf.training.softmax_loss import SoftmaxLoss

FIELDS = ["data", "loss", "seed", "kind", "name", "auroc", "fpr95", "ece", "nll", "ece_uncalibrated",
          "nll_uncalibrated", "temperature", "accuracy", "seconds"]  # fmt: skip
KNOWN_CLASSES = 5
KNN_K = {"fashion_mnist": 50, "digits": 5}
VERDICTS = {"A ahead": "vMF ahead", "B ahead": "the other ahead", "not resolved": "not resolved"}


def _vmf(**kwargs) -> Callable:
    def build(num_classes: int, width: int):
        loss = VMFLoss(num_classes, width, **kwargs)
        return loss, GlobalMeanMiner(loss)

    return build


def _pml(loss_cls, miner_cls=None, takes_classes: bool = True) -> Callable:
    def build(num_classes: int, width: int):
        extra = {"num_classes": num_classes, "embedding_size": width} if takes_classes else {}
        return loss_cls(**extra), (miner_cls() if miner_cls else None)

    return build


LOSSES = {
    "vmf": _vmf(),  # the defaults: kappa auto (2.0 for 5 classes), margin 0.1
    "vmf_kappa16": _vmf(kappa=16.0, margin=0.0),  # the demo config's (fashion_mnist.yaml)
    "multi_similarity": _pml(losses.MultiSimilarityLoss, miners.MultiSimilarityMiner, takes_classes=False),
    "normalized_softmax": _pml(losses.NormalizedSoftmaxLoss),
    "arcface": _pml(losses.ArcFaceLoss),
    "softmax": _pml(SoftmaxLoss),
}


def _take(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple:
    return x[index], y[index]


def _held_out(labels: torch.Tensor, shares: Sequence[float], generator: torch.Generator) -> list:
    """Per class, disjoint random index sets of the given shares of its images; the rest last."""
    parts = [[] for _ in range(len(shares) + 1)]
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        start = 0
        for i, share in enumerate(shares):
            count = round(share * len(idx)) if share < 1 else int(share)
            parts[i].append(idx[start : start + count])
            start += count
        parts[-1].append(idx[start:])
    return [torch.cat(p) for p in parts]


def load_data(name: str) -> dict:
    """``{"train", "calibration", "known": (x, y), "unknown": x}``; the split is fixed, seeds change the training."""
    generator = torch.Generator().manual_seed(0)
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x, y = torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y)
        is_known = y < KNOWN_CLASSES
        xk, yk = x[is_known], y[is_known]
        calibration, known, train = _held_out(yk, (0.2, 0.2), generator)
        unknown = x[~is_known]
    elif name == "fashion_mnist":
        from pml_vmf.data.fashion_mnist import DEBIAN_FOLDER, read_idx

        def split(kind: str) -> tuple:
            stem = "train" if kind == "train" else "t10k"
            images = read_idx(DEBIAN_FOLDER / f"{stem}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
            labels = read_idx(DEBIAN_FOLDER / f"{stem}-labels-idx1-ubyte.gz").astype(np.int64)
            return (torch.from_numpy((images - 0.5) / 0.5)[:, None], torch.from_numpy(labels))

        (x, y), (xt, yt) = split("train"), split("test")
        is_known = y < KNOWN_CLASSES
        xk, yk = x[is_known], y[is_known]
        calibration, known, train = _held_out(yk, (500, 500), generator)
        unknown = xt[yt >= KNOWN_CLASSES]
    else:
        raise ValueError(f"Unknown data set {name!r}: digits or fashion_mnist.")
    return {
        "train": _take(xk, yk, train), "calibration": _take(xk, yk, calibration), "known": _take(xk, yk, known),
        "unknown": unknown,
    }  # fmt: skip


def build_network(name: str) -> tuple[torch.nn.Module, int, int, int]:
    """``(network, embedding width, batch size, steps)``."""
    if name == "digits":
        return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)), 32, 64, 300
    from pml_vmf.models.small_cnn import SmallCNN

    return torch.nn.Sequential(SmallCNN(in_chans=1), torch.nn.Linear(64, 64)), 64, 128, 2 * (25000 // 128)


def train(data_name: str, loss_name: str, train_set: tuple, seed: int) -> tuple:
    torch.manual_seed(seed)
    net, width, batch_size, steps = build_network(data_name)
    loss_func, miner = LOSSES[loss_name](KNOWN_CLASSES, width)
    optimizer = torch.optim.Adam([*net.parameters(), *loss_func.parameters()], lr=1e-3)
    loader = DataLoader(TensorDataset(*train_set), batch_size=batch_size, shuffle=True, drop_last=True)
    step = 0
    net.train()
    while step < steps:
        for inputs, labels in loader:
            embeddings = net(inputs)
            loss = loss_func(embeddings, labels, miner(embeddings, labels) if miner is not None else None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    return net.eval(), loss_func.eval()


@torch.no_grad()
def embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(batch) for batch in x.split(1024)])


def own_logits(loss_func: torch.nn.Module, raw: torch.Tensor) -> Optional[torch.Tensor]:
    """The loss's own classifier's logits of raw embeddings, or None for a loss without one."""
    if isinstance(loss_func, SoftmaxLoss):
        return loss_func.classifier(raw).double()
    if hasattr(loss_func, "get_logits"):
        return loss_func.get_logits(raw).double()
    return None


@torch.no_grad()
def measure(data_name: str, data: dict, net: torch.nn.Module, loss_func: torch.nn.Module) -> list:
    """The rows of one network trained here: every score's rejection and every posterior's calibration."""
    raw = {part: embed(net, data[part][0] if part != "unknown" else data[part]) for part in data}
    labels = {part: data[part][1] for part in ("train", "calibration", "known")}
    logits = {part: own_logits(loss_func, z) for part, z in raw.items()}
    return measure_embeddings(raw, labels, getattr(loss_func, "kappa", 1.0), KNN_K[data_name],
                              logits if logits["known"] is not None else None)  # fmt: skip


def measure_embeddings(raw: dict, labels: dict, kappa: float, knn_k: int, logits: Optional[dict] = None) -> list:
    """The rows of one set of embeddings (``train``, ``calibration``, ``known``, ``unknown``, and optionally
    ``validation_unknown``: classes held out of training to validate on) and labels (the known classes numbered from
    0): every score's rejection and every posterior's calibration. ``kappa``: the shared
    concentration of the ``vmf_shared`` posterior (the loss's kappa; 1 for other losses, the temperature fits it).
    ``logits``: the loss's own classifier's logits of each part, or None."""
    unit = {part: F.normalize(z.double(), dim=1) for part, z in raw.items()}
    num_classes = int(labels["train"].max()) + 1
    sums = torch.zeros(num_classes, unit["train"].shape[1], dtype=torch.float64).index_add_(
        0, labels["train"], unit["train"]
    )
    estimate = estimate_class_means(sums, torch.bincount(labels["train"], minlength=num_classes))
    per_class = VMFClassModel.from_estimate(estimate)
    shared = VMFClassModel.from_estimate(estimate, shared_kappa=kappa)
    calibration_labels, known_labels = labels["calibration"], labels["known"]
    rows = []
    for name, model in (("vmf_per_class", per_class), ("vmf_shared", shared)):
        rows.append(_calibration_row(name, model.log_likelihoods, unit, calibration_labels, known_labels))
    if logits is not None:
        rows.append(_calibration_row("logits", lambda z: z, logits, calibration_labels, known_labels))
    per_class.calibrate(unit["calibration"], calibration_labels)
    parts = [p for p in ("known", "unknown", "calibration", "validation_unknown") if p in unit]
    scores = {part: per_class.scores(unit[part]) for part in parts}
    with FaissIndexKNN().indexed(unit["train"].float()) as search:
        for part in parts:
            distances, _ = search(unit[part].float(), knn_k)
            scores[part]["knn"] = -distances[:, -1].double()
    if logits is not None:
        for part in parts:
            scores[part]["msp"] = torch.softmax(logits[part], dim=1).max(dim=1).values
            scores[part]["energy"] = torch.logsumexp(logits[part], dim=1)
    # Test: known queries against unseen test classes. Validation, where a recipe held classes out of training: the
    # calibration images against those classes, the data a default score may be chosen on.
    pairs = [("score", "known", "unknown")] + [("validation_score", "calibration", "validation_unknown")] * (
        "validation_unknown" in unit
    )
    for kind, known_part, unknown_part in pairs:
        for name in scores[known_part]:
            known, unknown = scores[known_part][name], scores[unknown_part][name]
            rows.append(
                {"kind": kind, "name": name, "auroc": auroc(known, unknown), "fpr95": fpr_at_tpr(known, unknown)}
            )
    return rows


@torch.no_grad()
def measure_runs(runs: Sequence[Path], data_root: Path, data_name: str, knn_k: int, out: Path) -> None:
    """The rows of recipe runs trained on a set written by :func:`prepare_image_folder`: each run's model folder
    embeds ``train`` (its training classes only; the validation classes the recipe held out are neither known nor
    scored), ``calibration``, ``known`` and ``test`` (the unknown classes). Scores that need a loss's own classifier
    (``msp``, ``energy``) use vMF's saved means and kappa, or the proxies or linear layer of the run's best
    checkpoint."""
    from pml_vmf import load_embedder
    from pml_vmf.training import load_config

    for run in runs:
        embedder = load_embedder(run)
        config = load_config(run / "config.yaml", saved=True)
        index = {name: label for label, name in enumerate(embedder.config.class_names)}
        raw, labels = {}, {}
        for part in ("train", "calibration", "known", "test"):
            embeddings, paths = embedder.embed_folder(data_root / part, progress=False)
            classes = [Path(p).relative_to(data_root / part).parts[0] for p in paths]
            if part == "test":
                raw["unknown"] = embeddings
                continue
            keep = torch.tensor([c in index for c in classes])
            raw[part] = embeddings[keep]
            if part == "train" and not keep.all():  # the classes the recipe held out to validate on
                raw["validation_unknown"] = embeddings[~keep]
            labels[part] = torch.tensor([index[c] for c in classes if c in index])
        logits = None
        if embedder.class_means is not None and embedder.config.kappa is not None:
            means = embedder.class_means.double()
            logits = {part: embedder.config.kappa * F.normalize(z.double(), dim=1) @ means.T for part, z in raw.items()}
        else:
            classifier = _saved_classifier(run, config, len(index))
            if classifier is not None:
                logits = {part: own_logits(classifier, z.float()) for part, z in raw.items()}
        rows = measure_embeddings(raw, labels, embedder.config.kappa or 1.0, knn_k, logits)
        _append(out, data_name, config.loss.name, config.run.seed, rows, seconds="")
        print(f"{data_name} {config.loss.name} seed {config.run.seed}: {len(rows)} rows", flush=True)


def _saved_classifier(run: Path, config, num_classes: int) -> Optional[torch.nn.Module]:
    """The loss of a run's best checkpoint when it classifies (proxies, a linear layer), else None. Read with
    ``weights_only=True``: tensors only, nothing in the file can run code."""
    import json

    from pml_vmf.training import build_training_loss

    loss = build_training_loss(config.loss.name, num_classes, config.model.embedding_size,
                               params=config.loss.params.get(config.loss.name), use_miner=False).loss  # fmt: skip
    if own_logits(loss, torch.zeros(1, config.model.embedding_size)) is None:
        return None
    best = json.loads((run / "checkpoints" / "index.json").read_text())["best"]
    loss.load_state_dict(torch.load(run / "checkpoints" / best / "loss.pt", weights_only=True))
    return loss.eval()


def _append(out: Path, data_name: str, loss_name: str, seed: int, rows: list, seconds) -> None:
    context = {"data": data_name, "loss": loss_name, "seed": seed, "seconds": seconds}
    append_rows(out, [{**context, **row} for row in rows], FIELDS)


def _calibration_row(name: str, to_logits: Callable, embeddings: dict, calibration_labels, known_labels) -> dict:
    calibration_logits, known_logits = to_logits(embeddings["calibration"]), to_logits(embeddings["known"])
    temperature = fit_temperature(calibration_logits, calibration_labels)
    before = torch.log_softmax(known_logits, dim=1)
    after = torch.log_softmax(known_logits / temperature, dim=1)
    return {
        "kind": "posterior", "name": name, "temperature": temperature,
        "ece": expected_calibration_error(after.exp(), known_labels), "nll": negative_log_likelihood(after, known_labels),
        "ece_uncalibrated": expected_calibration_error(before.exp(), known_labels),
        "nll_uncalibrated": negative_log_likelihood(before, known_labels),
        "accuracy": float((after.argmax(dim=1) == known_labels).double().mean()),
    }  # fmt: skip


def run(data_names: Sequence[str], loss_names: Sequence[str], seeds: Sequence[int], out: Path) -> None:
    done = {(r["data"], r["loss"], r["seed"]) for r in read_rows(out)}
    for data_name in data_names:
        data = load_data(data_name)
        for loss_name in loss_names:
            for seed in seeds:
                if (data_name, loss_name, str(seed)) in done:
                    continue
                started = time.perf_counter()
                net, loss_func = train(data_name, loss_name, data["train"], seed)
                rows = measure(data_name, data, net, loss_func)
                seconds = round(time.perf_counter() - started, 1)
                _append(out, data_name, loss_name, seed, rows, seconds)
                best = max(r["auroc"] for r in rows if r["kind"] == "score")
                print(f"{data_name} {loss_name} seed {seed}: best AUROC {best:.4f} ({seconds:.0f} s)", flush=True)


def summary(path: Path) -> str:
    """Markdown tables: each (loss, score)'s AUROC and FPR@95 and each posterior's calibration, mean ± std over seeds;
    then vMF's own score against the best other, paired by seed."""
    rows = read_rows(path)
    by_key = defaultdict(dict)
    for r in rows:
        for metric in ("auroc", "fpr95", "ece", "nll", "ece_uncalibrated", "nll_uncalibrated", "accuracy"):
            if r[metric] != "":
                by_key[(r["data"], r["loss"], r["kind"], r["name"], metric)][int(r["seed"])] = float(r[metric])

    def cell(key, digits: int = 3) -> str:
        values = list(by_key.get(key, {}).values())
        if not values:
            return ""
        spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.{digits}f}{spread}"

    lines = []
    for data_name in sorted({r["data"] for r in rows}):
        losses_here = list(dict.fromkeys(r["loss"] for r in rows if r["data"] == data_name))
        scores = list(dict.fromkeys(r["name"] for r in rows if r["data"] == data_name and r["kind"] == "score"))
        seeds = len({r["seed"] for r in rows if r["data"] == data_name})
        kinds = {"score": "known vs unknown test classes", "validation_score": "validation: held-out images vs classes"}
        for kind, what in kinds.items():
            if not any(r["kind"] == kind and r["data"] == data_name for r in rows):
                continue
            lines += [f"**{data_name}**, AUROC (FPR@95%TPR), {what}, {seeds} seeds", ""]
            lines += ["| loss | " + " | ".join(scores) + " |", "|---|" + "---:|" * len(scores)]
            for loss_name in losses_here:
                cells = [
                    f"{cell((data_name, loss_name, kind, s, 'auroc'))} ({cell((data_name, loss_name, kind, s, 'fpr95'), 2)})"
                    if by_key.get((data_name, loss_name, kind, s, "auroc"))
                    else ""
                    for s in scores
                ]
                lines.append(f"| {loss_name} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [
            f"**{data_name}**, calibration on the known test images: ECE (NLL) after / before the temperature",
            "",
        ]
        posteriors = ["vmf_per_class", "vmf_shared", "logits"]
        lines += ["| loss | " + " | ".join(posteriors) + " | accuracy |", "|---|" + "---:|" * (len(posteriors) + 1)]
        for loss_name in losses_here:
            cells = []
            for p in posteriors:
                key = (data_name, loss_name, "posterior", p)
                cells.append(
                    f"{cell((*key, 'ece'))} ({cell((*key, 'nll'))}) / {cell((*key, 'ece_uncalibrated'))}"
                    if by_key.get((*key, "ece"))
                    else ""
                )
            lines.append(
                f"| {loss_name} | "
                + " | ".join(cells)
                + f" | {cell((data_name, loss_name, 'posterior', 'vmf_per_class', 'accuracy'))} |"
            )
        lines += [""]
        others = [
            k
            for k in by_key
            if k[0] == data_name and k[2] == "score" and k[4] == "auroc" and not k[1].startswith("vmf")
        ]
        if not others:
            continue
        best = max(others, key=lambda k: statistics.mean(by_key[k].values()))
        for loss_name in (name for name in losses_here if name.startswith("vmf")):
            for score in ("vmf_log_likelihood", "max_cosine"):  # vMF's own score, and the calibration's default
                ours = (data_name, loss_name, "score", score, "auroc")
                if ours not in by_key:
                    continue
                result = paired_difference(by_key[ours], by_key[best])
                lines.append(
                    f"* {loss_name}, {score} minus the best other ({best[1]}, {best[3]}), AUROC over "
                    f"{len(result.seeds)} seeds: {result.mean:+.4f} [{result.low:+.4f}, {result.high:+.4f}], "
                    f"{VERDICTS[result.verdict]}."
                )
        calibrated = [
            k
            for k in by_key
            if k[0] == data_name and k[2] == "posterior" and k[4] == "ece" and not k[1].startswith("vmf")
        ]
        best = min(calibrated, key=lambda k: statistics.mean(by_key[k].values()))
        for loss_name in (name for name in losses_here if name.startswith("vmf")):
            ours = (data_name, loss_name, "posterior", "vmf_shared", "ece")
            result = paired_difference(by_key[ours], by_key[best])
            lines.append(
                f"* {loss_name}'s calibrated posterior (vmf_shared) minus the best other ({best[1]}, {best[3]}), ECE "
                f"over {len(result.seeds)} seeds: {result.mean:+.4f} [{result.low:+.4f}, {result.high:+.4f}] "
                "(negative: vMF better calibrated)."
            )
        lines.append("")
    return "\n".join(lines)


def prepare_image_folder(source: Path, out: Path, seed: int = 0) -> None:
    """An image-folder set (``source/train/<class>/``, ``source/test/<class>/``) for the recipes' protocol, with two
    images of every training class held out of training: one in ``out/calibration/<class>/``, one in
    ``out/known/<class>/`` (drawn at random per class, fixed by ``seed``); ``out/test`` is ``source/test``, the unseen
    classes. Files are copied (the recipes never follow links)."""
    import random
    import shutil

    if out.exists():
        raise FileExistsError(f"{out} exists: remove it or choose another folder.")
    generator = random.Random(seed)
    for class_folder in sorted((source / "train").iterdir()):
        images = sorted(p for p in class_folder.iterdir() if p.is_file())
        if len(images) < 4:
            raise ValueError(f"{class_folder} has {len(images)} images: two held out need at least 4.")
        held = generator.sample(images, 2)
        for part, image in (("calibration", held[0]), ("known", held[1])):
            (out / part / class_folder.name).mkdir(parents=True)
            shutil.copy2(image, out / part / class_folder.name / image.name)
        (out / "train" / class_folder.name).mkdir(parents=True)
        for image in images:
            if image not in held:
                shutil.copy2(image, out / "train" / class_folder.name / image.name)
    shutil.copytree(source / "test", out / "test")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["digits", "fashion_mnist"], choices=["digits", "fashion_mnist"])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/open_set/rows.csv"))
    parser.add_argument("--summary", type=Path, help="print the Markdown summary of a CSV and exit")
    parser.add_argument("--prepare", nargs=2, type=Path, metavar=("SOURCE", "OUT"),
                        help="write an image-folder set with two images of every training class held out, and exit")  # fmt: skip
    parser.add_argument("--runs", nargs="+", type=Path, help="recipe runs to measure on --data-root (a prepared set)")
    parser.add_argument("--data-root", type=Path, help="with --runs: the set prepare wrote")
    parser.add_argument("--name", default="glyphs", help="with --runs: the data set's name in the CSV")
    parser.add_argument("--knn-k", type=int, default=5, help="with --runs: k of the k-NN score")
    args = parser.parse_args(argv)
    if args.runs is not None:
        if args.data_root is None:
            parser.error("--runs needs --data-root, the folder --prepare wrote.")
        measure_runs(args.runs, args.data_root, args.name, args.knn_k, args.out)
        print(summary(args.out))
        return 0
    if args.prepare is not None:
        prepare_image_folder(*args.prepare)
        return 0
    if args.summary is not None:
        print(summary(args.summary))
        return 0
    torch.set_num_threads(1)
    run(args.data, args.losses, args.seeds, args.out)
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

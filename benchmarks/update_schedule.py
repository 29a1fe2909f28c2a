"""How often should GlobalMeanMiner publish the means? A class-disjoint Fashion-MNIST retrieval sweep.

Trains the same small CNN with VMFLoss under several mean-update schedules (per epoch, every N steps, momentum,
full pass) on Fashion-MNIST classes 0-4 (training split) and reports MAP@R on classes 5-9 (test split), each run with
the same seed, data order and initialisation. Appends one CSV row per finished run, so an interrupted sweep resumes.

    python benchmarks/update_schedule.py --data-root /usr/share/datasets/fashion-mnist --out benchmarks/results/update_schedule.csv
"""

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import timm
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import GlobalMeanMiner, VMFLoss, compute_class_means
from pml_vmf.data import read_fashion_mnist
from pml_vmf.models import EmbeddingModel

SCHEDULES = {
    "per_epoch": {"update_every": None, "publish_at_epoch_end": True},
    "every_10": {"update_every": 10},
    "every_50": {"update_every": 50},
    "every_200": {"update_every": 200},
    "every_1_momentum_0.9": {"update_every": 1, "momentum": 0.9},
    "every_10_momentum_0.5": {"update_every": 10, "momentum": 0.5},
    "full_pass_per_epoch": {"update_every": None, "full_pass": True},
}


def load_split(root: Path, split: str, classes: range) -> TensorDataset:
    """The images of ``classes`` from the official ``train`` or ``test`` split, normalised, labels from 0."""
    images = read_fashion_mnist(root, download=False)[split]
    keep = np.isin(images.labels, list(classes))
    x = torch.tensor(images.images[keep], dtype=torch.float32).unsqueeze(1) / 255.0
    return TensorDataset((x - 0.2860) / 0.3530, torch.tensor(images.labels[keep] - classes.start))


def small_cnn(embedding_size: int) -> torch.nn.Module:
    """The library's 4-conv network (timm ``small_cnn``) on 1-channel images, with a linear embedding head."""
    return EmbeddingModel(timm.create_model("small_cnn", in_chans=1, num_classes=0), embedding_size)


@torch.no_grad()
def embed(model: torch.nn.Module, dataset: TensorDataset) -> torch.Tensor:
    model.eval()
    out = torch.cat([model(x) for x, _ in DataLoader(dataset, batch_size=512)])
    model.train()
    return out


def run(name: str, schedule: dict, train: TensorDataset, test: TensorDataset, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = small_cnn(args.embedding_size)
    loss_func = VMFLoss(num_classes=5, embedding_size=args.embedding_size, kappa=args.kappa)
    full_pass = schedule.get("full_pass", False)
    miner = GlobalMeanMiner(
        loss_func,
        update_every=schedule["update_every"],
        momentum=schedule.get("momentum", 0.0),
        seed_missing_means=not full_pass,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(args.seed + 1)
    )
    start = time.perf_counter()
    for _ in range(args.epochs):
        if full_pass:
            loss_func.means.copy_(compute_class_means(model, DataLoader(train, batch_size=512), 5).means)
        for inputs, labels in loader:
            embeddings = model(inputs)
            loss = loss_func(embeddings, labels, miner(embeddings, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if schedule.get("publish_at_epoch_end", False):
            miner.update_means()
    train_seconds = time.perf_counter() - start
    calculator = AccuracyCalculator(include=("mean_average_precision_at_r", "precision_at_1", "r_precision"))
    test_embeddings = embed(model, test)
    metrics = calculator.get_accuracy(test_embeddings, test.tensors[1])
    return {"schedule": name, "seed": args.seed, "epochs": args.epochs, "kappa": args.kappa,
            "train_seconds": round(train_seconds, 1), **{k: round(float(v), 4) for k, v in metrics.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="IDX folder (default: Debian's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/update_schedule.csv"))
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--kappa", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_split(args.data_root, "train", range(0, 5)), load_split(args.data_root, "test", range(5, 10))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        with args.out.open() as f:
            done = {(row["schedule"], int(row["seed"])) for row in csv.DictReader(f)}
    for name in args.schedules:
        if (name, args.seed) in done:
            continue
        row = run(name, SCHEDULES[name], train, test, args)
        print(row, flush=True)
        write_header = not args.out.exists()
        with args.out.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if write_header:
                writer.writeheader()
            writer.writerow(row)


if __name__ == "__main__":
    main()

"""Forward+backward time of VMFLoss against a hand-written floor and PML's classification losses.

Every candidate is timed once per round, in a new random order each round, and the table reports the median over
rounds, so that drifts of a shared machine hit all candidates alike. Ratios are to the floor, measured in the same run.

    python benchmarks/bench_loss.py                      # CPU
    python benchmarks/bench_loss.py --device cuda        # GPU
"""

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses

from pml_vmf import GlobalMeanMiner, VMFLoss

KAPPA = 16.0


def candidates(num_classes: int, width: int, device: torch.device) -> "dict[str, Callable]":
    """Returns step functions that each run one forward+backward (or one miner call) on a fixed batch."""
    vmf = VMFLoss(num_classes, width, kappa=KAPPA).to(device)
    vmf.means.copy_(F.normalize(torch.randn(num_classes, width, device=device), dim=1))
    miner = GlobalMeanMiner(vmf)
    means = vmf.means.clone()
    pml = {
        "NormalizedSoftmaxLoss": losses.NormalizedSoftmaxLoss(num_classes, width, temperature=1 / KAPPA),
        "ArcFaceLoss": losses.ArcFaceLoss(num_classes, width),
        "ProxyAnchorLoss": losses.ProxyAnchorLoss(num_classes, width),
    }
    for loss in pml.values():
        loss.to(device)

    def step(loss_fn: Callable) -> Callable:
        def run(x: torch.Tensor, labels: torch.Tensor) -> None:
            x.grad = None
            loss_fn(x, labels).backward()

        return run

    def floor(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(KAPPA * F.normalize(x, dim=1) @ means.t(), labels)

    table = {
        "floor (F.cross_entropy, hand-written)": step(floor),
        "VMFLoss": step(vmf),
        "VMFLoss + GlobalMeanMiner (drop-in step)": step(lambda x, y: vmf(x, y, miner(x, y))),
        "GlobalMeanMiner call alone": lambda x, y: miner(x, y),
    }
    table.update({name: step(loss) for name, loss in pml.items()})
    return table


def time_interleaved(table: "dict[str, Callable]", x, labels, rounds: int, inner: int, device) -> "dict[str, float]":
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for fn in table.values():  # warm-up: allocations, cuBLAS handles, lazy device moves
        for _ in range(3):
            fn(x, labels)
    samples = {name: [] for name in table}
    names = list(table)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                table[name](x, labels)
            sync()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def print_profiles(table: "dict[str, Callable]", x: torch.Tensor, labels: torch.Tensor) -> None:
    """Prints where the time of a floor step and of a VMFLoss step goes, op by op (20 steps each)."""
    for name in ("floor (F.cross_entropy, hand-written)", "VMFLoss", "GlobalMeanMiner call alone"):
        with torch.profiler.profile() as profiler:
            for _ in range(20):
                table[name](x, labels)
        print(f"\n{name}:\n" + profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--num-classes", type=int, nargs="+", default=[100, 11318])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument(
        "--profile", action="store_true", help="also print torch.profiler tables of VMFLoss and the floor"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    random.seed(0)
    torch.manual_seed(0)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__} on {machine}; batch {args.batch_size}, width {args.width}, kappa {KAPPA}; "
          f"median of {args.rounds} interleaved rounds of {args.inner} steps\n")  # fmt: skip
    print("| classes | candidate | ms / step | ratio to floor |")
    print("|---:|---|---:|---:|")
    for num_classes in args.num_classes:
        x = torch.randn(args.batch_size, args.width, device=device, requires_grad=True)
        labels = torch.randint(0, num_classes, (args.batch_size,), device=device)
        medians = time_interleaved(
            candidates(num_classes, args.width, device), x, labels, args.rounds, args.inner, device
        )
        if args.profile:
            print_profiles(candidates(num_classes, args.width, device), x, labels)
        floor = medians["floor (F.cross_entropy, hand-written)"]
        for name, seconds in medians.items():
            print(f"| {num_classes} | {name} | {seconds * 1e3:.3f} | {seconds / floor:.2f} |")
        vmf = medians["VMFLoss"]
        print(
            f"\n{num_classes} classes: VMFLoss / floor = {vmf / floor:.2f} (target <= 1.2); "
            f"VMFLoss / NormalizedSoftmaxLoss = {vmf / medians['NormalizedSoftmaxLoss']:.2f} (target <= 1.0); "
            f"miner call / VMFLoss step = {medians['GlobalMeanMiner call alone'] / vmf:.2f} (target <= 0.25)\n"
        )


if __name__ == "__main__":
    main()

"""Class means sharded across processes against every process holding all of them: class state per process and
seconds per training step (miner + loss + backward), measured side by side in one run, printed as ratios.

    accelerate launch --multi_gpu --num_processes 2 benchmarks/sharded_means.py --classes 10000 100000 1000000
    accelerate launch --multi_gpu --num_processes 2 benchmarks/sharded_means.py --classes 10000000 --width 128 \
        --sample-rate 0.1 --sharded-only    # Partial FC's negative-class sampling; every class replicated would not fit

Embedding 512, a batch of 256 per process, means initialised to random unit vectors. Class state is what grows with
the number of classes and lives on every process: the loss's means and the miner's sums and counts (vMF has no
optimizer state for them). Appends one row per setting to --out (CSV).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from pml_vmf import GlobalMeanMiner, PartialFCVMFLoss, VMFLoss
from pml_vmf.files import read_rows, write_rows
from pml_vmf.sharding import ClassShard


def class_state_bytes(loss: VMFLoss, miner: GlobalMeanMiner) -> int:
    return sum(t.numel() * t.element_size() for t in (loss.means, miner.class_sums, miner.class_counts))


def seconds_per_step(loss: VMFLoss, miner: GlobalMeanMiner, batch: int, steps: int, accelerator: Accelerator) -> float:
    num_classes, width = loss.num_classes, loss.embedding_size
    generator = torch.Generator().manual_seed(accelerator.process_index)
    times = []
    for step in range(steps + 1):  # the first step warms up allocators and collectives
        embeddings = torch.randn(batch, width, generator=generator).requires_grad_(True)
        labels = torch.randint(0, num_classes, (batch,), generator=generator)
        accelerator.wait_for_everyone()
        started = time.perf_counter()
        loss(embeddings, labels, miner(embeddings, labels)).backward()
        accelerator.wait_for_everyone()
        if step:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(num_classes: int, sharded: bool, args: argparse.Namespace, accelerator: Accelerator) -> dict:
    shard = ClassShard.contiguous(num_classes) if sharded else None
    loss = PartialFCVMFLoss(num_classes, args.width, kappa=16.0, shard=shard, sample_rate=args.sample_rate)
    with torch.no_grad():
        loss.means.copy_(F.normalize(torch.randn(loss.means.shape), dim=1))
    miner = GlobalMeanMiner(loss, update_every=None)  # accumulates; the update is once per epoch
    row = {"classes": num_classes, "sharded": sharded, "state_mib": class_state_bytes(loss, miner) / 2**20}
    row["seconds_per_step"] = seconds_per_step(loss, miner, args.batch, args.steps, accelerator)
    del loss, miner
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256, help="per process")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=1.0,
        help="PartialFCVMFLoss(sample_rate=...): Partial FC's share of classes per softmax",
    )
    parser.add_argument(
        "--sharded-only", action="store_true", help="skip every-class-on-every-process (when it does not fit)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sharded_means/cpu.csv"))
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    world = accelerator.num_processes
    rows = []
    for num_classes in args.classes:
        sharded = measure(num_classes, True, args, accelerator)
        replicated = {"state_mib": float("nan"), "seconds_per_step": float("nan")}
        if not args.sharded_only:
            replicated = measure(num_classes, False, args, accelerator)
        rows.append(
            {
                **sharded,
                "replicated_state_mib": replicated["state_mib"],
                "replicated_seconds_per_step": replicated["seconds_per_step"],
            }
        )
    if accelerator.is_main_process:
        print(f"machine: {platform.processor() or platform.machine()}, {world} processes (gloo), {torch.get_num_threads()} "
              f"thread(s) each; embedding {args.width}, batch {args.batch} per process, sample rate {args.sample_rate}, median of {args.steps} steps")  # fmt: skip
        print(
            "| classes | state MiB / process, sharded | every class | ratio (1/W = %.3f) | s / step, sharded | every class | ratio |"
            % (1 / world)
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['classes']:,} | {r['state_mib']:.1f} | {r['replicated_state_mib']:.1f} | {r['state_mib'] / r['replicated_state_mib']:.3f} "
                  f"| {r['seconds_per_step']:.3f} | {r['replicated_seconds_per_step']:.3f} "
                  f"| {r['seconds_per_step'] / r['replicated_seconds_per_step']:.2f} |")  # fmt: skip
        previous = read_rows(args.out)
        write_rows(
            args.out,
            previous
            + [
                {**r, "processes": world, "width": args.width, "batch": args.batch, "sample_rate": args.sample_rate}
                for r in rows
            ],
        )
    accelerator.end_training()


if __name__ == "__main__":
    main()

"""Run by tests/runs/test_distributed.py under `accelerate launch --multi_gpu --num_processes 2`.

VMFLoss and GlobalMeanMiner used as PML users wrap their losses: unwrapped, both in PML's distributed wrappers, and
the miner alone. Each process feeds its half of the same global batches and saves the class counts, means, losses
and the error raised, if any.
"""

import argparse

import torch
from accelerate import Accelerator
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

from pml_vmf import GlobalMeanMiner, VMFLoss

NUM_CLASSES, SIZE, BATCH = 4, 8, 16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(BATCH, SIZE, generator=generator), torch.arange(BATCH) % NUM_CLASSES) for _ in range(3)]
    local = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
    results = {}
    for wrap in ("none", "both", "miner"):
        loss = VMFLoss(NUM_CLASSES, SIZE)
        miner = GlobalMeanMiner(loss, update_every=None)
        loss_fn = DistributedLossWrapper(loss) if wrap == "both" else loss
        miner_fn = DistributedMinerWrapper(miner) if wrap in ("both", "miner") else miner
        values, error = [], None
        try:
            for embeddings, labels in batches:
                x = embeddings[local].clone().requires_grad_(True)
                value = loss_fn(x, labels[local], miner_fn(x, labels[local]))
                value.backward()
                values.append(value.item())
            estimate = miner.update_means()
            results[wrap] = {"counts": estimate.counts.clone(), "means": loss.means.clone(), "losses": values}
        except ValueError as caught:
            error = str(caught)
            results[wrap] = {"error": error}
    torch.save(results, f"{args.out}/rank{rank}.pt")
    accelerator.end_training()


if __name__ == "__main__":
    main()

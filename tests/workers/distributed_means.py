"""Run by tests/runs/test_distributed.py under `accelerate launch --multi_gpu --num_processes 2`.

Each process feeds its half of every global batch to a GlobalMeanMiner and runs compute_class_means both ways
(DistributedSampler, and an accelerate-prepared loader with gather_for_metrics), then saves what it got.
"""

import argparse

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pml_vmf import GlobalMeanMiner, VMFLoss, compute_class_means


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    data = torch.load(args.data)
    num_classes = data["num_classes"]
    results = {}

    loss = VMFLoss(num_classes, data["embeddings"].shape[-1])
    miner = GlobalMeanMiner(loss, **data["miner_kwargs"])
    for step, (embeddings, labels) in enumerate(zip(data["embeddings"], data["labels"])):
        local = slice(rank * len(labels) // world_size, (rank + 1) * len(labels) // world_size)
        miner(embeddings[local], labels[local])
        if step == 0:
            results["seeded_means"] = loss.means.clone()
    results["final_estimate"] = miner.update_means()

    model = torch.nn.Linear(*data["model_state"]["weight"].shape[::-1])
    model.load_state_dict(data["model_state"])
    dataset = TensorDataset(data["inputs"], data["input_labels"])
    sampler = DistributedSampler(dataset, shuffle=True, seed=3)
    results["sampler_pass"] = compute_class_means(
        model, DataLoader(dataset, batch_size=8, sampler=sampler), num_classes
    )
    loader = accelerator.prepare(DataLoader(dataset, batch_size=8, shuffle=False))
    results["gather_pass"] = compute_class_means(model, loader, num_classes, gather=accelerator.gather_for_metrics)
    results["world_size"] = world_size
    torch.save(results, f"{args.out}/rank{rank}.pt")
    accelerator.end_training()


if __name__ == "__main__":
    main()

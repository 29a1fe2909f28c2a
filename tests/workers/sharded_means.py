"""Run by tests/runs/test_sharded_means.py under `accelerate launch --multi_gpu`: each process owns a range of the
classes (sizes given, uneven), feeds its slice of every global batch to a sharded PartialFCVMFLoss and GlobalMeanMiner, and
saves its losses, embedding gradients, learned-kappa gradients, sampled classes, mean shard and predictions.

Usage: sharded_means.py DATA OUT SIZE [SIZE ...]
"""

import sys

import torch
from accelerate import Accelerator

from pml_vmf import GlobalMeanMiner, PartialFCVMFLoss
from pml_vmf.sharding import ClassShard


def main() -> None:
    data_path, out, *sizes = sys.argv[1:]
    accelerator = Accelerator(cpu=True)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    data = torch.load(data_path)
    shard = ClassShard.contiguous(data["num_classes"], [int(s) for s in sizes])
    results = {"shard": (shard.start, shard.stop)}
    for name, options in data["settings"].items():
        loss_func = PartialFCVMFLoss(data["num_classes"], data["embedding_size"], shard=shard, **options["loss"])
        miner = GlobalMeanMiner(loss_func, **options["miner"])
        steps = []
        for embeddings, labels in zip(data["embeddings"], data["labels"]):
            local = slice(rank * len(labels) // world_size, (rank + 1) * len(labels) // world_size)
            z = embeddings[local].clone().requires_grad_(True)
            loss = loss_func(z, labels[local], miner(z, labels[local]))
            loss.backward()
            kappa_grad = loss_func.log_kappa.grad.clone() if loss_func.learn_kappa else None
            if loss_func.learn_kappa:
                loss_func.log_kappa.grad = None
            steps.append(
                {"loss": loss.detach(), "grad": z.grad, "kappa_grad": kappa_grad, "sampled": loss_func.sampled_classes}
            )
        results[name] = {
            "steps": steps,
            "means": loss_func.means.clone(),
            "predictions": loss_func.predict(data["queries"]),
        }
    torch.save(results, f"{out}/rank{rank}.pt")
    accelerator.end_training()


if __name__ == "__main__":
    main()

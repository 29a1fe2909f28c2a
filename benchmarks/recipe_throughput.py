"""Training throughput of the recipe engine against a bare PyTorch loop over the same model, data and batch.

Both train the same timm backbone with VMFLoss + GlobalMeanMiner from the same DataLoader (sampler, transforms,
workers), for the same number of steps. They alternate, in rounds, in one process, so that a drift of a shared
machine hits both alike; the table reports the median images/s of each and their ratio (target: recipe >= 0.9 x bare).

    python benchmarks/recipe_throughput.py                                   # Fashion-MNIST, CPU
    python benchmarks/recipe_throughput.py --device cuda --mixed-precision bf16 model.backbone=resnet50 data.image_size=224
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pml_vmf import GlobalMeanMiner, VMFLoss
from pml_vmf.models import create_embedding_model
from pml_vmf.training import RecipeRun, load_config
from pml_vmf.training.mean_schedule import miner_settings

CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "fashion_mnist.yaml"


def bare_loop_seconds(run: RecipeRun, model: torch.nn.Module, steps: int, dtype: torch.dtype | None) -> float:
    """The loop a user would write by hand: no accelerate, no scheduler, no progress bar, no logging."""
    device = run.device
    c = run.config
    loss_func = VMFLoss(run.evaluator.num_classes, c.model.embedding_size, **c.loss.params.get("vmf", {})).to(device)
    loss_func.means.copy_(run.loss.loss.means)
    miner = GlobalMeanMiner(loss_func, **miner_settings(c))
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.optim.lr, weight_decay=c.optim.weight_decay)
    model.train()
    started = time.perf_counter()
    for step, (images, labels, _) in enumerate(run.train_loader):
        if step >= steps:
            break
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            embeddings = model(images)
        loss = loss_func(embeddings.float(), labels, miner(embeddings.float(), labels))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.backbone=resnet50")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory() as output_dir:
        config = load_config(
            args.config,
            [f"run.output_dir={output_dir}", "run.name=throughput", "loss.name=vmf", "data.val_fraction=0.0",
             f"train.max_steps_per_epoch={args.steps}", f"run.mixed_precision={args.mixed_precision}", *args.overrides],
        )  # fmt: skip
        run = RecipeRun(config)
        run.means.refresh_with_full_pass()
        c = config
        bare_model = create_embedding_model(
            c.model.backbone, c.model.embedding_size, freeze_batchnorm=c.model.freeze_batchnorm
        ).to(run.device)
        dtype = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.mixed_precision]
        images_per_step = c.train.batch_size
        rates: dict = {"recipe": [], "bare loop": []}
        bare_loop_seconds(run, bare_model, 3, dtype)  # warm-up: workers, allocator, kernels
        run.train_epoch(0)
        for round_index in range(args.rounds):
            order = ["recipe", "bare loop"] if round_index % 2 == 0 else ["bare loop", "recipe"]
            for name in order:
                if name == "recipe":
                    seconds = run.train_epoch(round_index + 1)["train_seconds"]
                else:
                    seconds = bare_loop_seconds(run, bare_model, args.steps, dtype)
                rates[name].append(args.steps * images_per_step / seconds)
    recipe, bare = statistics.median(rates["recipe"]), statistics.median(rates["bare loop"])
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {run.device}"
        + (f" ({torch.cuda.get_device_name()})" if run.device.type == "cuda" else "")
    )
    print(
        f"config: {args.config} {' '.join(args.overrides)}; backbone {c.model.backbone} at {c.data.image_size}px, "
        f"batch {images_per_step}, {args.steps} steps x {args.rounds} rounds, mixed precision {args.mixed_precision}"
    )
    print("| loop | images/s (median) | all rounds |\n|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.0f}' for v in values)} |")
    print(f"recipe / bare loop = {recipe / bare:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()

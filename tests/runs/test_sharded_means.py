"""Class means sharded across 2 and 3 real processes (gloo on the CPU, uneven ranges) against one process holding
every mean: losses, gradients with respect to the embeddings and to a learned kappa, published means and
predictions, to 1e-6 in float64 (the comparison of PaddlePaddle's margin cross-entropy and TorchRec's sharding tests)."""

import math
import subprocess
import sys
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from pml_vmf import GlobalMeanMiner, VMFLoss
from tests.multiprocess import accelerate_launch, child_environment
from tests.recipe_runs import REPO

WORKER = REPO / "tests" / "workers" / "sharded_means.py"
NUM_CLASSES, EMBEDDING_SIZE, GLOBAL_BATCH, STEPS = 7, 5, 12, 5
SETTINGS = {
    "paper": {"loss": {"kappa": 16.0}, "miner": {"update_every": 2}},
    "margin_learned_kappa_momentum": {
        "loss": {"kappa": 8.0, "margin": 0.1, "learn_kappa": True},
        "miner": {"update_every": 2, "momentum": 0.5},
    },
    "epoch_accumulation": {"loss": {"kappa": 16.0}, "miner": {"update_every": None}},
    "sampled_negatives": {"loss": {"kappa": 8.0, "margin": 0.1, "sample_rate": 0.5}, "miner": {"update_every": 2}},
}


def _data() -> dict:
    generator = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, NUM_CLASSES, (GLOBAL_BATCH,), generator=generator) for _ in range(STEPS)]
    labels[0][:NUM_CLASSES] = torch.arange(NUM_CLASSES)  # every class seeded in the first batch
    embeddings = [
        torch.randn(GLOBAL_BATCH, EMBEDDING_SIZE, generator=generator, dtype=torch.float64) for _ in range(STEPS)
    ]
    queries = torch.randn(9, EMBEDDING_SIZE, generator=generator, dtype=torch.float64)
    return dict(
        num_classes=NUM_CLASSES,
        embedding_size=EMBEDDING_SIZE,
        settings=SETTINGS,
        embeddings=embeddings,
        labels=labels,
        queries=queries,
    )


def _one_process(data: dict, options: dict, sampled: Optional[list] = None) -> dict:
    """Every mean in one process, fed the global batch: per-sample losses and their gradients. With ``sampled``
    (the classes the processes sampled, per step), the softmax over those classes only."""
    loss_options = {k: v for k, v in options["loss"].items() if k != "sample_rate"}
    loss_func = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, **loss_options)
    miner = GlobalMeanMiner(loss_func, **options["miner"])
    steps = []
    for step, (embeddings, labels) in enumerate(zip(data["embeddings"], data["labels"])):
        z = embeddings.clone().requires_grad_(True)
        indices = miner(z, labels)
        if sampled is None:
            per_sample = loss_func.compute_loss(z, labels, indices, z, labels)["loss"]["losses"]
        else:
            targets = torch.searchsorted(sampled[step], labels)
            logits = loss_func.get_logits(z)[:, sampled[step]]
            logits = logits - F.one_hot(targets, logits.shape[1]) * (loss_func.kappa * loss_func.margin)
            per_sample = F.cross_entropy(logits, targets, reduction="none")
        per_sample.sum().backward()  # sample i's loss depends on z_i only: z.grad[i] is its own gradient
        kappa_grad = None
        if loss_func.learn_kappa:
            kappa_grad, loss_func.log_kappa.grad = loss_func.log_kappa.grad.clone(), None
        steps.append({"losses": per_sample.detach(), "grad": z.grad, "kappa_grad": kappa_grad})
    return {"steps": steps, "means": loss_func.means.clone(), "predictions": loss_func.predict(data["queries"])}


@pytest.mark.multiprocess
@pytest.mark.parametrize("sizes", [(4, 3), (1, 4, 2)], ids=["2 processes", "3 processes, uneven"])
def test_sharded_means_equal_one_process_holding_every_mean(sizes, tmp_path):
    data = _data()
    torch.save(data, tmp_path / "data.pt")
    accelerate_launch(WORKER, str(tmp_path / "data.pt"), str(tmp_path), *map(str, sizes), num_processes=len(sizes))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(len(sizes))]
    assert [r["shard"] for r in ranks] == [(sum(sizes[:i]), sum(sizes[: i + 1])) for i in range(len(sizes))]
    local = GLOBAL_BATCH // len(sizes)
    for name, options in SETTINGS.items():
        sampled = None
        if "sample_rate" in options["loss"]:  # each process samples among its own classes, the batch's always in
            sampled = [torch.cat([r[name]["steps"][step]["sampled"] for r in ranks]) for step in range(STEPS)]
            for step, labels in enumerate(data["labels"]):
                assert set(labels.tolist()) <= set(sampled[step].tolist())
                for r, size in zip(ranks, sizes):
                    assert len(r[name]["steps"][step]["sampled"]) >= math.ceil(options["loss"]["sample_rate"] * size)
            assert any(len(s) < NUM_CLASSES for s in sampled), (
                "every step sampled every class: the test would be vacuous"
            )
        reference = _one_process(data, options, sampled)
        for step, expected in enumerate(reference["steps"]):
            for rank, result in enumerate(ranks):
                got = result[name]["steps"][step]
                mine = slice(rank * local, (rank + 1) * local)
                torch.testing.assert_close(
                    got["loss"], expected["losses"][mine].mean(), atol=1e-6, rtol=0, msg=f"{name} step {step} loss"
                )
                # each process's loss is the mean over its own samples: its gradient is theirs over the local batch
                torch.testing.assert_close(
                    got["grad"] * local, expected["grad"][mine], atol=1e-6, rtol=0, msg=f"{name} step {step} grad"
                )
            if expected["kappa_grad"] is not None:  # each process's kappa scales its shard's logits of every sample
                summed = sum(
                    result[name]["steps"][step]["kappa_grad"] for result in ranks
                )  # what the recipe all-reduces
                # log_kappa is a float32 parameter: its gradient agrees to 1e-6 relative
                torch.testing.assert_close(
                    summed * local, expected["kappa_grad"], atol=0, rtol=1e-6, msg=f"{name} step {step} kappa"
                )
        torch.testing.assert_close(torch.cat([r[name]["means"] for r in ranks]), reference["means"], atol=1e-6, rtol=0)
        for result in ranks:
            assert torch.equal(result[name]["predictions"], reference["predictions"]), name


RUN_WORKER = REPO / "tests" / "workers" / "recipe_run.py"
SHARDED_RUN = (
    "loss.name=vmf", "train.max_steps_per_epoch=4", "model.freeze_batchnorm=true", "data.val_fraction=0.0", "run.name=run",
    "loss.params.vmf.learn_kappa=true", "loss.params.vmf.margin=0.1",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_recipe_run_with_sharded_means_ends_where_the_unsharded_run_ends_and_resumes_exactly(digits_folder, tmp_path):
    from safetensors.torch import load_file

    from tests.recipe_runs import DIGITS_CONFIG, TRAIN_SCRIPT

    # One epoch of 4 steps, the setting and tolerance of the 1-against-2-process recipe test (float32 training).
    overrides = [f"data.root={digits_folder}", *SHARDED_RUN]
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    accelerate_launch(RUN_WORKER, str(DIGITS_CONFIG), str(plain), *overrides, "train.epochs=1", num_processes=2)
    accelerate_launch(
        RUN_WORKER,
        str(DIGITS_CONFIG),
        str(sharded),
        *overrides,
        "train.epochs=1",
        "loss.means.shard=true",
        num_processes=2,
    )
    plain_ranks, sharded_ranks = (
        [torch.load(d / f"rank{r}.pt", weights_only=False) for r in range(2)] for d in (plain, sharded)
    )
    for key, value in plain_ranks[0]["model"].items():
        torch.testing.assert_close(sharded_ranks[0]["model"][key], value, atol=1e-4, rtol=0, msg=key)
    halves = [r["loss"]["means"] for r in sharded_ranks]
    assert [len(h) for h in halves] == [3, 2]  # the 5 training classes of digits, split 3 + 2
    torch.testing.assert_close(torch.cat(halves), plain_ranks[0]["loss"]["means"], atol=1e-4, rtol=0)
    torch.testing.assert_close(
        sharded_ranks[0]["loss"]["log_kappa"], plain_ranks[0]["loss"]["log_kappa"], atol=1e-5, rtol=0
    )
    saved = [load_file(d / "run" / "model" / "class_means.safetensors")["class_means"] for d in (plain, sharded)]
    torch.testing.assert_close(saved[1], saved[0], atol=1e-4, rtol=0)  # the model folder holds every shard, gathered

    # Two epochs, stopped after the first and resumed, end where the sharded run that never stopped ends.
    def train(folder, *extra):
        accelerate_launch(TRAIN_SCRIPT, f"--config={DIGITS_CONFIG}", *overrides, "train.epochs=2", "loss.means.shard=true",
                          f"run.output_dir={folder}", *extra, num_processes=2)  # fmt: skip

    train(tmp_path / "through")
    train(tmp_path / "stopped", "train.stop_after_epoch=1")
    one_process = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--resume", str(tmp_path / "stopped" / "run")],
        capture_output=True, text=True, env=child_environment(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert (
        one_process.returncode == 2
        and "written by 2 processes with sharded class means and this run has 1" in one_process.stderr
    ), one_process.stderr[-2000:]
    accelerate_launch(TRAIN_SCRIPT, "--resume", str(tmp_path / "stopped" / "run"), num_processes=2)
    ends = [
        load_file(tmp_path / d / "run" / "model" / "class_means.safetensors")["class_means"]
        for d in ("through", "stopped")
    ]
    torch.testing.assert_close(ends[1], ends[0], atol=1e-6, rtol=0)
    # An unsharded run resumed with its means sharded: the message says which setting to resume with.
    from tests.multiprocess import accelerate_launch_command

    resharded = subprocess.run(
        accelerate_launch_command(TRAIN_SCRIPT, "--resume", str(plain / "run"), "loss.means.shard=true", "train.epochs=2", num_processes=2),
        capture_output=True, text=True, env=child_environment(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert resharded.returncode != 0 and "resume it with loss.means.shard=false" in resharded.stderr, resharded.stderr[
        -2000:
    ]

"""Class means sharded across 2 and 3 real processes (gloo on the CPU, uneven ranges) against one process holding
every mean: losses, gradients with respect to the embeddings and to a learned kappa, published means and
predictions, to 1e-6 in float64 (the comparison of PaddlePaddle's margin cross-entropy and TorchRec's sharding tests)."""

import pytest
import torch

from pml_vmf import GlobalMeanMiner, VMFLoss
from tests.multiprocess import accelerate_launch
from tests.recipe_runs import REPO

WORKER = REPO / "tests" / "workers" / "sharded_means.py"
NUM_CLASSES, EMBEDDING_SIZE, GLOBAL_BATCH, STEPS = 7, 5, 12, 5
SETTINGS = {
    "paper": {"loss": {"kappa": 16.0}, "miner": {"update_every": 2}},
    "margin_learned_kappa_momentum": {"loss": {"kappa": 8.0, "margin": 0.1, "learn_kappa": True}, "miner": {"update_every": 2, "momentum": 0.5}},
    "epoch_accumulation": {"loss": {"kappa": 16.0}, "miner": {"update_every": None}},
}


def _data() -> dict:
    generator = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, NUM_CLASSES, (GLOBAL_BATCH,), generator=generator) for _ in range(STEPS)]
    labels[0][:NUM_CLASSES] = torch.arange(NUM_CLASSES)  # every class seeded in the first batch
    embeddings = [torch.randn(GLOBAL_BATCH, EMBEDDING_SIZE, generator=generator, dtype=torch.float64) for _ in range(STEPS)]
    queries = torch.randn(9, EMBEDDING_SIZE, generator=generator, dtype=torch.float64)
    return dict(num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE, settings=SETTINGS, embeddings=embeddings, labels=labels, queries=queries)


def _one_process(data: dict, options: dict) -> dict:
    """Every mean in one process, fed the global batch: per-sample losses and their gradients."""
    loss_func = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE, **options["loss"])
    miner = GlobalMeanMiner(loss_func, **options["miner"])
    steps = []
    for embeddings, labels in zip(data["embeddings"], data["labels"]):
        z = embeddings.clone().requires_grad_(True)
        indices = miner(z, labels)
        per_sample = loss_func.compute_loss(z, labels, indices, z, labels)["loss"]["losses"]
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
        reference = _one_process(data, options)
        for step, expected in enumerate(reference["steps"]):
            for rank, result in enumerate(ranks):
                got = result[name]["steps"][step]
                mine = slice(rank * local, (rank + 1) * local)
                torch.testing.assert_close(got["loss"], expected["losses"][mine].mean(), atol=1e-6, rtol=0, msg=f"{name} step {step} loss")
                # each process's loss is the mean over its own samples: its gradient is theirs over the local batch
                torch.testing.assert_close(got["grad"] * local, expected["grad"][mine], atol=1e-6, rtol=0, msg=f"{name} step {step} grad")
            if expected["kappa_grad"] is not None:  # each process's kappa scales its shard's logits of every sample
                summed = sum(result[name]["steps"][step]["kappa_grad"] for result in ranks)  # what the recipe all-reduces
                # log_kappa is a float32 parameter: its gradient agrees to 1e-6 relative
                torch.testing.assert_close(summed * local, expected["kappa_grad"], atol=0, rtol=1e-6, msg=f"{name} step {step} kappa")
        torch.testing.assert_close(torch.cat([r[name]["means"] for r in ranks]), reference["means"], atol=1e-6, rtol=0)
        for result in ranks:
            assert torch.equal(result[name]["predictions"], reference["predictions"]), name

"""Two real processes (gloo on the CPU) give the same means as one process, on every rank."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import GlobalMeanMiner, VMFLoss, compute_class_means
from tests.multiprocess import accelerate_launch

NUM_CLASSES, EMBEDDING_SIZE = 9, 12
WORKER = Path(__file__).resolve().parents[1] / "workers" / "distributed_means.py"


@pytest.fixture(scope="module")
def data_and_results(tmp_path_factory):
    torch.manual_seed(1)
    tmp = tmp_path_factory.mktemp("distributed")
    # 6 global batches of 16; class 8 appears in batch 0 only, on the second half (rank 1) only.
    labels = torch.randint(0, NUM_CLASSES - 1, (6, 16))
    labels[0, 12] = NUM_CLASSES - 1
    data = {
        "num_classes": NUM_CLASSES,
        "embeddings": torch.randn(6, 16, EMBEDDING_SIZE) * 2,
        "labels": labels,
        "miner_kwargs": {"update_every": 4, "momentum": 0.5},
        "model_state": torch.nn.Linear(5, EMBEDDING_SIZE).state_dict(),
        "inputs": torch.randn(101, 5),  # 101 samples: both ways of sharding must pad
        "input_labels": torch.randint(0, NUM_CLASSES, (101,)),
    }
    torch.save(data, tmp / "data.pt")
    accelerate_launch(WORKER, "--data", str(tmp / "data.pt"), "--out", str(tmp))
    results = [torch.load(tmp / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    return data, results


def _one_process_miner_run(data):
    loss = VMFLoss(NUM_CLASSES, EMBEDDING_SIZE)
    miner = GlobalMeanMiner(loss, **data["miner_kwargs"])
    seeded = None
    for embeddings, labels in zip(data["embeddings"], data["labels"]):
        miner(embeddings, labels)
        if seeded is None:
            seeded = loss.means.clone()
    return seeded, miner.update_means()


@pytest.mark.multiprocess
def test_two_process_miner_means_equal_one_process_means_on_every_rank(data_and_results):
    data, results = data_and_results
    seeded, final = _one_process_miner_run(data)
    for rank, result in enumerate(results):
        assert result["world_size"] == 2
        torch.testing.assert_close(result["seeded_means"], seeded, rtol=0, atol=1e-6, msg=f"seeded means, rank {rank}")
        torch.testing.assert_close(result["final_estimate"].means, final.means, rtol=0, atol=1e-6, msg=f"rank {rank}")
        assert torch.equal(result["final_estimate"].counts, final.counts)
    assert seeded[NUM_CLASSES - 1].abs().sum() > 0, "class 8 was only on rank 1 and must be seeded on both"


@pytest.mark.multiprocess
@pytest.mark.parametrize("way", ["sampler_pass", "gather_pass"])
def test_two_process_full_pass_counts_every_sample_once(data_and_results, way):
    data, results = data_and_results
    model = torch.nn.Linear(5, EMBEDDING_SIZE)
    model.load_state_dict(data["model_state"])
    loader = DataLoader(TensorDataset(data["inputs"], data["input_labels"]), batch_size=8)
    expected = compute_class_means(model, loader, NUM_CLASSES)
    for rank, result in enumerate(results):
        estimate = result[way]
        assert estimate.counts.sum() == 101 and torch.equal(estimate.counts, expected.counts), f"rank {rank}"
        torch.testing.assert_close(estimate.means, expected.means, rtol=0, atol=1e-6, msg=f"{way}, rank {rank}")


@pytest.mark.multiprocess
def test_pml_distributed_wrappers_count_once_or_fail_in_one_line(tmp_path):
    """Wrapped in both of PML's wrappers, the miner counts the global batch once and the means and losses equal the
    unwrapped run's; the miner wrapped alone fails with a message that says what to wrap."""
    accelerate_launch(Path(__file__).resolve().parents[1] / "workers" / "pml_wrappers.py", "--out", str(tmp_path))
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        plain, both = results["none"], results["both"]
        assert plain["counts"].tolist() == [12, 12, 12, 12]  # 3 global batches of 16 over 4 classes
        assert both["counts"].tolist() == plain["counts"].tolist()
        torch.testing.assert_close(both["means"], plain["means"])
        # PML's loss wrapper returns the world size times the global batch's mean; unwrapped, each process's own mean.
        assert "error" not in both and len(both["losses"]) == 3
        assert "Wrap neither" in results["miner"]["error"] and "DistributedMinerWrapper" in results["miner"]["error"]

"""Class shards in one process: ranges, the state a shard holds (1/W of the whole), and a shard's full pass; the
multi-process equality with unsharded means is tests/runs/test_sharded_means.py."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import compute_class_means
from pml_vmf.sharding import ClassShard


def test_a_shard_is_a_contiguous_range_and_bad_sizes_say_what_is_wrong():
    assert [ClassShard.contiguous(10, rank=r, world_size=3) for r in range(3)] == [
        ClassShard(0, 4, 10, 0, 3), ClassShard(4, 7, 10, 1, 3), ClassShard(7, 10, 10, 2, 3)
    ]  # fmt: skip
    assert ClassShard.contiguous(10, [1, 9], rank=1, world_size=2) == ClassShard(1, 10, 10, 1, 2)
    with pytest.raises(
        ValueError, match=r"Shard sizes \[5, 4\] must be 2 positive counts .* adding up to num_classes 10"
    ):
        ClassShard.contiguous(10, [5, 4], rank=0, world_size=2)
    with pytest.raises(ValueError, match="needs rank and world_size"):
        ClassShard.contiguous(10)


def test_a_shards_full_pass_is_its_slice_of_the_full_pass():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 6), torch.randint(0, 8, (40,)))
    model = torch.nn.Linear(6, 4)
    loader = DataLoader(data, batch_size=16)
    everything = compute_class_means(model, loader, 8)
    shard = ClassShard.contiguous(8, [3, 5], rank=1, world_size=2)
    mine = compute_class_means(model, loader, 8, gather=lambda t: t, shard=shard)  # one process: the gather is identity
    torch.testing.assert_close(mine.means, everything.means[3:])
    assert torch.equal(mine.counts, everything.counts[3:])
    with pytest.raises(ValueError, match="pass gather=accelerator.gather_for_metrics"):
        compute_class_means(model, loader, 8, shard=shard)

"""Collectives for the mean update: sums and counts are all-reduced, nothing else crosses processes."""

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .pml_api import is_distributed


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sums each tensor in place across all processes; a no-op without an initialised process group."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def distributed_sampler_padding(dataloader: DataLoader) -> "tuple[int, int, int] | None":
    """Describes how a ``DistributedSampler`` pads the dataset, so padded duplicates can be left out.

    ``DistributedSampler`` (without ``drop_last``) repeats the first indices of its (shuffled) order until the total is a
    multiple of the world size, then deals position ``p`` of that order to rank ``p % world_size``. Local sample ``i``
    of rank ``r`` is therefore a padded duplicate exactly when ``i * world_size + r >= len(dataset)``.

    Returns:
        ``(dataset_size, world_size, rank)`` when ``dataloader`` draws from a ``DistributedSampler`` in order, else None.
    """
    sampler = getattr(dataloader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        return None
    return len(sampler.dataset), sampler.num_replicas, sampler.rank

"""MPerClassBatchSampler: m per class, seeded, and the same global batch whatever the number of processes."""

import numpy as np
import pytest

from pml_vmf.data import MPerClassBatchSampler

LABELS = np.repeat(np.arange(12), 7)


def _local_batches(world_size: int, rank: int, epoch: int = 0, seed: int = 0) -> list:
    sampler = MPerClassBatchSampler(LABELS, 24, 4, seed=seed, rank=rank, world_size=world_size)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_global_batch_has_m_images_of_each_of_its_classes():
    for batch in _local_batches(1, 0):
        counts = np.bincount(LABELS[[index for index, _ in batch]], minlength=12)
        assert len(batch) == 24 and set(counts[counts > 0]) == {4} and (counts > 0).sum() == 6


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_processes_draw_contiguous_parts_of_the_same_global_batch(world_size):
    single = _local_batches(1, 0)
    parts = [_local_batches(world_size, rank) for rank in range(world_size)]
    for step, batch in enumerate(single):
        assert sum((part[step] for part in parts), []) == batch  # indices and augmentation seeds


def test_batches_depend_on_seed_and_epoch_only():
    assert _local_batches(1, 0, epoch=3) == _local_batches(1, 0, epoch=3)
    assert _local_batches(1, 0, epoch=3) != _local_batches(1, 0, epoch=4)
    assert _local_batches(1, 0, seed=1) != _local_batches(1, 0, seed=2)


def test_state_dict_restores_the_epoch():
    sampler = MPerClassBatchSampler(LABELS, 24, 4, seed=5)
    sampler.set_epoch(7)
    restored = MPerClassBatchSampler(LABELS, 24, 4, seed=0)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler)


def test_impossible_batch_shapes_are_errors_that_say_what_to_change():
    with pytest.raises(ValueError, match="multiple of train.samples_per_class"):
        MPerClassBatchSampler(LABELS, 25, 4)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        MPerClassBatchSampler(LABELS, 24, 4, world_size=5)
    with pytest.raises(ValueError, match="the training set has 12"):
        MPerClassBatchSampler(LABELS, 64, 4)

"""A process that holds a persistent DataLoader with pml-vmf's worker_init_fn: prints its worker's pid, loads one
more epoch when told, then raises an uncaught error while the loader is alive (for tests/unit/test_worker_signals.py)."""

import sys

import torch

from pml_vmf.training.interruptions import ignore_stop_signals_in_worker


class WorkerPid(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        import os

        return os.getpid()


loader = torch.utils.data.DataLoader(
    WorkerPid(), batch_size=2, num_workers=1, persistent_workers=True, worker_init_fn=ignore_stop_signals_in_worker
)
print(int(next(iter(loader))[0]), flush=True)
sys.stdin.readline()  # the test signals the worker meanwhile
print(sum(len(batch) for batch in loader), flush=True)
raise RuntimeError("an error the script does not catch, with the loader's workers alive")

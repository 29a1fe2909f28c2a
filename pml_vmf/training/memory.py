"""Peak memory of a training window: CUDA's allocator peak, or the process's peak resident set size."""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Starts a new peak-memory window: CUDA's allocator peak, or the process's peak RSS (Linux's VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size (Linux >= 4.0)
    except OSError:
        pass  # elsewhere the peak is the process's since it started


def peak_memory_mb(device: torch.device) -> float:
    """The peak since :func:`reset_peak_memory`: CUDA memory allocated, or resident memory of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux and BSD report KiB

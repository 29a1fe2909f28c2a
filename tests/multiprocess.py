"""Starts a script under `accelerate launch --multi_gpu` with gloo on the CPU, as a user would on a GPU machine."""

import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch_command(script: Path, *args: str, num_processes: int = 2) -> list:
    """The ``accelerate launch`` command line of :func:`accelerate_launch`."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        *(["--multi_gpu"] if num_processes > 1 else ["--cpu"]), "--num_processes", str(num_processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(script), *args,
    ]  # fmt: skip


def child_environment() -> dict:
    """One CPU thread per process, hub offline, no GPU."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def accelerate_launch(script: Path, *args: str, num_processes: int = 2, timeout: float = 300) -> str:
    """Runs ``script`` on ``num_processes`` CPU processes and returns its output; fails loudly on a non-zero exit."""
    command = accelerate_launch_command(script, *args, num_processes=num_processes)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=child_environment())
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited with {completed.returncode}:\n{output[-6000:]}")
    return output

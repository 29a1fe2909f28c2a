"""Data workers outlive a stop signal sent to the whole process group, yet never keep the training process from
exiting (pml_vmf.training.interruptions.ignore_stop_signals_in_worker)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER_SCRIPT = Path(__file__).parents[1] / "workers" / "loader_at_exit.py"


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="the platform cannot tell who sent a signal")
def test_worker_survives_a_foreign_sigterm_and_the_process_still_exits_after_an_uncaught_error():
    process = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        worker_pid = int(process.stdout.readline())
        os.kill(worker_pid, signal.SIGTERM)  # sent by this test, not by the worker's parent: as a group signal would be
        os.kill(worker_pid, signal.SIGINT)
        time.sleep(0.5)
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "4"  # the same worker served the next epoch
        # Exiting with the persistent loader alive: multiprocessing stops the worker with its own SIGTERM.
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)

"""Ways a run stops before its end: a stop signal (preemption, Ctrl-C), and a training loss that is not finite."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """The run stopped on request (a signal, or ``train.stop_after_epoch``) after writing a checkpoint to resume from.

    Attributes:
        checkpoint: the checkpoint folder written last.
        exit_code: what the script exits with: 0 for a planned stop, 128 + the signal number for a signal, as a
            process killed by that signal would report.
    """

    def __init__(self, message: str, checkpoint, exit_code: int) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.exit_code = exit_code


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the step was not applied and no checkpoint was written."""


class StopSignals:
    """Turns SIGTERM and SIGINT into a request to stop after the current step, instead of dying mid-step.

    A cluster preempting a job sends SIGTERM and, a grace period later, SIGKILL; ``torchrun`` and
    ``accelerate launch --multi_gpu`` forward SIGTERM to every training process. The handler only records the signal;
    the training loop asks :meth:`requested` after each step and then writes a checkpoint and exits. A second SIGINT
    (Ctrl-C pressed twice) raises ``KeyboardInterrupt`` at once. Handlers can only be installed from the main thread;
    elsewhere (a notebook worker thread) this does nothing.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


def ignore_stop_signals_in_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader workers: the training process decides when to stop, so a SIGTERM or SIGINT
    sent to the whole process group must not kill its data workers first (the step in flight would then fail)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)

"""Ways a run stops before its end: a stop signal (preemption, Ctrl-C), and a training loss that is not finite."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

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

    @classmethod
    def at(
        cls, progress, steps_per_epoch: int, local_loss: float, last_checkpoint, hints: list, run_root
    ) -> NonFiniteLossError:
        """The error for the step after ``progress``, naming where it happened, what was kept and what to lower."""
        kept = (
            f"The last good checkpoint, {last_checkpoint}, is kept"
            if last_checkpoint
            else "No checkpoint had been written yet"
        )
        return cls(
            f"The training loss is not finite (this process: {local_loss}) at epoch {progress.epoch}, step "
            f"{progress.step + 1} of {steps_per_epoch} (global step {progress.global_step + 1}); the step was not "
            f"applied and nothing was saved. {kept}. Lower {', or '.join(hints)}, then continue with --resume "
            f"{run_root} (with the new values as overrides) or start a new run."
        )


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

    def install(self) -> StopSignals:
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
    sent to the whole process group (a cluster preempting the job, Ctrl-C) must not kill its data workers first (the
    step in flight would then fail).

    A SIGTERM from the worker's own parent still ends it: that is how Python's multiprocessing stops daemonic workers
    when the training process exits with a live persistent loader (after an uncaught error, say); ignoring that one
    too would leave the exit waiting for the worker forever. Where the platform cannot tell who sent a signal (no
    ``sigwaitinfo``, as on macOS), only SIGINT is ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # held for the thread below, in every thread
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the training process's handler, inherited by the fork
    threading.Thread(
        target=_end_on_parents_sigterm, args=(os.getppid(),), name="sigterm-from-parent", daemon=True
    ).start()


def _end_on_parents_sigterm(parent_pid: int) -> None:
    """Waits for SIGTERMs; ends the process the default way on one its parent sent, drops any other."""
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent_pid:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.kill(os.getpid(), signal.SIGTERM)


class StepGuard:
    """The per-step agreement between processes: one reduction tells every process the mean loss, whether any
    process's loss is not finite, and whether any process received a stop signal, so that all of them stop after
    the same step (and a NaN stops every process before the step is applied).

    Args:
        accelerator: the run's accelerator.
        stop_signals: this process's signal handler.

    Attributes:
        stop_agreed: after :meth:`check`, whether any process has received a stop signal.
    """

    def __init__(self, accelerator, stop_signals: StopSignals) -> None:
        self.accelerator = accelerator
        self.stop_signals = stop_signals
        self.stop_agreed = False

    def check(self, loss: torch.Tensor) -> tuple[float, Optional[float]]:
        """Returns the loss averaged over processes, and this process's loss when any process's is not finite
        (else None)."""
        import torch

        value = loss.detach().float()
        finite = torch.isfinite(value)
        stop = float(self.stop_signals.received is not None)
        state = torch.stack(
            [torch.where(finite, value, 0.0), (~finite).float(), torch.tensor(stop, device=value.device)]
        )
        if self.accelerator.num_processes > 1:
            state = self.accelerator.reduce(state, "sum")
        loss_sum, num_non_finite, num_stopping = state.tolist()
        self.stop_agreed = num_stopping > 0
        return loss_sum / self.accelerator.num_processes, value.item() if num_non_finite else None

    def any_stop_signal(self) -> bool:
        """Whether any process received a stop signal; the same answer on every process."""
        received = self.stop_signals.received is not None
        if self.accelerator.num_processes == 1:
            return received
        import torch

        return self.accelerator.reduce(torch.tensor(float(received), device=self.accelerator.device), "sum").item() > 0

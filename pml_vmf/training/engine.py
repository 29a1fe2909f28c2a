"""The training engine behind recipes/train.py: the loop that trains, validates, checkpoints and tests a run.

Its pieces are built by the functions of :mod:`~pml_vmf.training.builders`; what happens around the loop has its own
home: when the class means change (:mod:`~pml_vmf.training.mean_schedule`), what is measured
(:mod:`~pml_vmf.training.evaluator`), what is logged (:mod:`~pml_vmf.training.run_log`), how processes agree to stop
(:mod:`~pml_vmf.training.interruptions`), what is saved (:mod:`~pml_vmf.training.checkpoints`); code of the
user's runs at the end of each step or epoch (:class:`RunHook`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from accelerate.utils import set_seed

from ..data import build_transforms
from ..models import EmbeddingModel
from ..progress_bars import progress_bar
from .builders import (
    apply_optimizer_settings,
    build_accelerator,
    build_loader,
    build_loss,
    build_model,
    build_optimizer,
    build_sampler,
    build_scheduler,
    build_splits,
    check_config,
)
from .checkpoints import CheckpointKeeper
from .config import ConfigError, RecipeConfig, load_config, save_config
from .data_fingerprint import FINGERPRINT_FILE, data_changes, write_fingerprint
from .evaluator import RunEvaluator, evaluation_sets
from .export import save_run_model
from .interruptions import NonFiniteLossError, StepGuard, StopSignals, TrainingInterrupted
from .mean_schedule import build_mean_schedule
from .memory import peak_memory_mb, reset_peak_memory
from .progress import TrainingProgress
from .run_folder import RunFolder
from .run_log import RunLog


class RunHook:
    """Code a user runs inside a training run without editing the engine, as PML trainers' end-of-iteration and
    end-of-epoch hooks. Subclass and override what you need; pass instances as ``RecipeRun(config, hooks=[...])`` (or
    ``recipes/train.py``'s ``main(argv, hooks=[...])``). Every process calls them."""

    def on_step_end(self, run: RecipeRun, loss: float) -> None:
        """After each optimisation step, with the step's loss averaged over processes (``run.progress`` counts it)."""

    def on_epoch_end(self, run: RecipeRun, record: dict) -> None:
        """After each epoch's training and validation, before its checkpoint, with its ``metrics.jsonl`` record
        (the training values on every process; the validation metrics on the main process only)."""


class RecipeRun:
    """One training run of a recipe config, on however many processes ``accelerate launch`` started.

    SIGTERM or SIGINT (a cluster preempting the job, Ctrl-C) stops it after the current step with a mid-epoch
    checkpoint, from which ``--resume`` continues to the same end as a run that was never stopped. A NaN or inf
    training loss stops it before the step is applied, keeping the checkpoints as they were.

    Args:
        config: the resolved config.
        resume: continue the run folder's last checkpoint; its saved config is ``config``.
        hooks: :class:`RunHook` objects called at the end of each step and epoch.
        evaluation_only: open a finished run to evaluate its checkpoints (:meth:`evaluate_best`): nothing of the
            run folder is written.
    """

    def __init__(
        self,
        config: RecipeConfig,
        resume: bool = False,
        hooks: Sequence[RunHook] = (),
        *,
        evaluation_only: bool = False,
    ) -> None:
        self.config = c = config
        self.hooks = list(hooks)
        check_config(c)
        self.accelerator = build_accelerator(c)
        self.device = self.accelerator.device
        self.run = RunFolder(Path(c.run.output_dir) / c.run.name)
        self.checkpoints = CheckpointKeeper(self.accelerator, self.run.checkpoints)
        if not resume and self.checkpoints.exists():
            raise FileExistsError(
                f"{self.run.root} already holds a run. Continue it with --resume {self.run.root}, or choose another "
                "run.name; nothing was overwritten."
            )
        set_seed(c.run.seed)
        self.splits = build_splits(c)
        changed = data_changes(self.run.root, self.splits) if resume and not evaluation_only else None
        if changed:
            raise ConfigError(
                f"--resume {self.run.root}: the data changed since the run started ({changed}). Resume on the data it "
                "started with, or start a new run (run.name=...)."
            )
        num_classes = int(self.splits.train.labels.max()) + 1
        model = build_model(c)
        train_transform, eval_transform = build_transforms(
            model.backbone, c.data.image_size, train_scale=tuple(c.data.train_scale), hflip=c.data.hflip,
            color_jitter=c.data.color_jitter, mean=c.data.mean, std=c.data.std,
        )  # fmt: skip
        val = self.splits.val
        held_out = 0 if val is None or self.splits.val_classes_are_train_classes else len(set(val.labels.tolist()))
        self.sampler = build_sampler(c, self.splits.train.labels, self.accelerator, held_out_classes=held_out)
        self.train_loader = build_loader(c, self.splits.train, train_transform, batch_sampler=self.sampler)
        self.loss = build_loss(c, num_classes, self.accelerator)
        optimizer = build_optimizer(c, model, self.loss)
        self.scheduler = build_scheduler(c, optimizer, self.steps_per_epoch)
        eval_sets = evaluation_sets(self.splits)
        eval_loaders = [
            build_loader(c, images, eval_transform, batch_size=c.eval.batch_size, cache=c.data.cache_eval_images)
            for images in eval_sets.values()
        ]
        # The train loader shards itself (MPerClassBatchSampler); the scheduler steps once per global step, so
        # neither goes through prepare(), which would shard or step them per process.
        self.model, self.optimizer, *eval_loaders = self.accelerator.prepare(model, optimizer, *eval_loaders)
        self.evaluator = RunEvaluator(
            c, self.accelerator, self.model, self.splits, dict(zip(eval_sets, eval_loaders)), num_classes
        )
        self.evaluator.check_select_by(self.loss.loss)
        self.means = build_mean_schedule(c, self.loss, self.evaluator.training_set_means, self.accelerator.gather)
        self.progress = TrainingProgress()
        loss_shared, self.checkpoints.per_process = self.loss.checkpoint_objects()
        self.checkpoints.shared = {
            "scheduler": self.scheduler,
            "sampler": self.sampler,
            "progress": self.progress,
            **loss_shared,
        }
        self.stop_signals = StopSignals()
        self.guard = StepGuard(self.accelerator, self.stop_signals)
        if evaluation_only:
            self.log = None
            return
        if self.checkpoints.exists():  # only when resuming
            saved = load_config(self.run.config, saved=True) if self.run.config.is_file() else c
            if saved.optim.optimizer != c.optim.optimizer:
                raise ConfigError(
                    f"optim.optimizer cannot change on --resume ({saved.optim.optimizer} -> {c.optim.optimizer}): the "
                    "checkpoint holds that optimizer's state. Resume with the same optimizer, or start a new run (run.name=...)."
                )
            path = self.checkpoints.load("last")
            changed = apply_optimizer_settings(c, self.optimizer, self.scheduler)
            if changed:
                self.accelerator.print(
                    f"Resumed with new optimizer settings: {', '.join(changed)} (the schedule keeps its position)."
                )
                if self.accelerator.is_main_process:
                    save_config(c, self.run.config)  # the run's config says what it trains with from here on
            repaired = self.checkpoints.repair_index(path, self._best_checkpoint())
            if repaired:
                self.accelerator.print(repaired)
            where = f"epoch {self.progress.epoch}" + (f", step {self.progress.step}" if self.progress.step else "")
            self.accelerator.print(f"Resumed from {path}; continuing at {where}.")
        elif self.run.holds_a_run():  # stopped before its first checkpoint (a crash, a bad setting): start it again
            self.accelerator.print(f"{self.run.root} holds no checkpoint yet: training it from the beginning.")
        if self.accelerator.is_main_process:
            self.run.truncate_logs(self.progress.epoch, self.progress.global_step)
            if not resume:
                save_config(config, self.run.config)
            if not resume or not (self.run.root / FINGERPRINT_FILE).is_file():
                write_fingerprint(self.run.root, self.splits)
        self.log = RunLog(self.accelerator, self.run, c)

    @property
    def steps_per_epoch(self) -> int:
        limit = self.config.train.max_steps_per_epoch
        return len(self.sampler) if limit is None else min(limit, len(self.sampler))

    @property
    def unwrapped_model(self) -> EmbeddingModel:
        return self.accelerator.unwrap_model(self.model)

    def fit(self) -> Optional[dict]:
        """Trains from where the run stands to ``train.epochs``, then tests the best checkpoint.

        Returns:
            The final metrics (on the main process; ``{}`` elsewhere).

        Raises:
            TrainingInterrupted: after a stop signal or ``train.stop_after_epoch``, with a checkpoint to resume from.
            NonFiniteLossError: when the training loss is NaN or inf.
        """
        self.means.before_training(self.progress.global_step)
        self.stop_signals.install()
        try:
            for epoch in range(self.progress.epoch, self.config.train.epochs):
                if self._patience_exhausted(epoch):
                    break
                self._fit_epoch(epoch)
        finally:
            self.stop_signals.uninstall()
        return self.test()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimisation step; returns the training loss averaged over processes.

        Raises:
            NonFiniteLossError: when the loss is NaN or inf on any process; the step is not applied.
        """
        images, labels = images.to(self.device), labels.to(self.device)
        with self.accelerator.autocast():
            embeddings = self.model(images)
        loss = self.loss(embeddings, labels)
        mean_loss, non_finite = self.guard.check(loss / self.loss.backward_scale)
        if non_finite is not None:
            self._raise_non_finite(non_finite)
        self.accelerator.backward(loss)
        self.loss.sync_parameter_gradients()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.means.after_step(embeddings, labels)
        return mean_loss

    def train_epoch(self, epoch: int) -> dict:
        """Trains ``epoch`` from ``progress.step`` (0 unless resuming mid-epoch) and returns its record.

        Raises:
            TrainingInterrupted: after a stop signal, once the mid-epoch checkpoint is written.
        """
        self.model.train()
        progress = self.progress
        if progress.epoch != epoch:
            progress.start_epoch(epoch)
        self.sampler.set_epoch(epoch, start_batch=progress.step)
        reset_peak_memory(self.device)
        started = time.perf_counter()
        bar = progress_bar(
            total=self.steps_per_epoch,
            initial=progress.step,
            desc=f"epoch {epoch}",
            show=self.accelerator.is_local_main_process,
        )
        with bar:  # closed before any message of a stop, so that the message is the last line
            for images, labels, _ in self.train_loader:
                if progress.step >= self.steps_per_epoch:
                    break
                loss = self.train_step(images, labels)
                progress.count_step(loss)
                bar.update()
                self.log.step(
                    epoch, progress.step, progress.global_step, loss, [g["lr"] for g in self.optimizer.param_groups]
                )
                for hook in self.hooks:
                    hook.on_step_end(self, loss)
                if self.guard.stop_agreed and progress.step < self.steps_per_epoch:
                    bar.close()
                    name, where = (
                        f"epoch_{epoch:04d}_step_{progress.step:06d}",
                        f"epoch {epoch}, step {progress.step} of {self.steps_per_epoch}",
                    )
                    self._interrupt(name, where)
        diagnostics = self.means.end_epoch(epoch)
        seconds = time.perf_counter() - started  # the mean updates are part of the training cost
        return {
            "train_loss": progress.loss_sum / max(1, progress.loss_steps),
            "train_seconds": seconds,
            "images_per_second": progress.loss_steps * self.config.train.batch_size / seconds,
            "peak_memory_mb": peak_memory_mb(self.device),
            **diagnostics,
        }

    def _patience_exhausted(self, epoch: int) -> bool:
        """Whether ``train.early_stopping_patience`` has run out before ``epoch`` (see
        :meth:`TrainingProgress.epochs_without_improvement`); the same answer on every process."""
        patience = self.config.train.early_stopping_patience
        if patience is None or self.splits.val is None or self.progress.epochs_without_improvement(epoch) < patience:
            return False
        self.accelerator.print(
            f"Early stopping before epoch {epoch}: no better validation {self.config.eval.select_by} for "
            f"{self.progress.epochs_without_improvement(epoch)} epochs (train.early_stopping_patience={patience}); "
            f"testing the best checkpoint, epoch {self.progress.best_epoch}."
        )
        return True

    def _fit_epoch(self, epoch: int) -> None:
        c = self.config
        trained = self.train_epoch(epoch)
        record, validation, is_best = {"epoch": epoch, **trained}, {}, False
        if self.splits.val is not None and ((epoch + 1) % c.eval.every == 0 or epoch + 1 == c.train.epochs):
            validation = self.evaluator.validate(self.loss.loss)
            record.update(split="val", **validation)
            score = torch.tensor(record.get(c.eval.select_by, 0.0), device=self.device)
            score = self.accelerator.reduce(score, "sum").item()  # main process's value, on every process
            is_best = score > self.progress.best_score
            if is_best:
                self.progress.best_score, self.progress.best_epoch = score, epoch
        self.log.epoch(record, trained, validation, self.progress.global_step)
        for hook in self.hooks:
            hook.on_epoch_end(self, record)
        self._check_finite_state()  # before the progress moves on, so that an error names this epoch
        self.progress.start_epoch(epoch + 1)
        path = self.checkpoints.save(
            f"epoch_{epoch:04d}", is_best=is_best or self.splits.val is None, best_name=self._best_checkpoint()
        )
        if epoch + 1 == c.train.epochs:
            return
        if self.guard.any_stop_signal():
            self._interrupt(path.name, f"the end of epoch {epoch}", saved=path)
        if c.train.stop_after_epoch is not None and epoch + 1 >= c.train.stop_after_epoch:
            self.log.finish()
            raise TrainingInterrupted(
                f"Stopped after epoch {epoch} (train.stop_after_epoch); continue with --resume {self.run.root}.",
                path,
                0,
            )

    def _interrupt(self, name: str, where: str, saved: Optional[Path] = None) -> None:
        path = saved or self.checkpoints.save(name, is_best=False, best_name=self._best_checkpoint())
        self.log.finish()
        signum = self.stop_signals.received
        raise TrainingInterrupted(
            f"Stopped at {where} on {self.stop_signals.name or 'a stop signal from another process'}; checkpoint "
            f"{path} written. Continue with --resume {self.run.root}.",
            path,
            128 + (signum or 15),
        )

    def _raise_non_finite(self, local_loss: float) -> None:
        c = self.config
        hints = [
            f"optim.lr (now {c.optim.lr:g})",
            *([f"optim.loss_lr (now {c.optim.loss_lr:g})"] if self.loss.parameters() else []),
        ]
        hints += self.loss.divergence_hints()
        if self.accelerator.mixed_precision == "fp16":
            hints.append("train in bf16 instead of fp16 (run.mixed_precision=bf16)")
        self.log.finish()
        raise NonFiniteLossError.at(
            self.progress, self.steps_per_epoch, local_loss, self.checkpoints.path("last"), hints, self.run.root
        )

    def _check_finite_state(self) -> None:
        """Never lets a checkpoint hold NaN weights or means, whatever let them through."""
        tensors = [*self.unwrapped_model.parameters(), *self.loss.loss.parameters(), *self.loss.loss.buffers()]
        if not torch.stack([torch.isfinite(t).all() for t in tensors]).all():  # one read-back, not one per tensor
            self._raise_non_finite(float("nan"))

    def _best_checkpoint(self) -> Optional[str]:
        """The name of the best epoch's checkpoint, as the run's progress records it (None before any)."""
        return f"epoch_{self.progress.best_epoch:04d}" if self.progress.best_epoch >= 0 else None

    def _test_metrics(self) -> dict:
        """Retrieval on the test split and, where the test classes are the training classes, closed-set accuracy.

        A loss that classifies by means its schedule sets first takes the means of a full pass with the tested
        checkpoint, since the paper's alternating algorithm ends with a mean step; the accuracy with the means the
        checkpoint held (up to a publication interval stale) stays as ``classifier_accuracy_stale_means``, a
        diagnostic. The loss keeps the full-pass means, so the saved model carries them.
        """
        metrics = self.evaluator.test()
        self._training_set_estimate = None
        if not self.splits.test_classes_are_train_classes:
            return metrics
        self._training_set_estimate = self.evaluator.training_set_means()
        means = self._training_set_estimate.means
        stale = {}
        if self.means.holds_means:
            stale["classifier_accuracy_stale_means"] = self.evaluator.classifier_accuracy(self.loss.loss)
            self.means.set_means(means)  # the final mean step
        closed_set = self.evaluator.classification_metrics(self.loss.loss, means)
        nearest = {"nearest_mean_accuracy": closed_set.pop("nearest_mean_accuracy")}
        return {**metrics, **nearest, **stale, **closed_set}

    def _class_statistics(self) -> dict:
        """Each training class's image count and mean resultant length with the tested weights (the closed-set
        test's pass, or one pass more), saved beside the means: inference estimates each class's concentration from
        them (:mod:`pml_vmf.open_set`). Every process calls it."""
        estimate = self._training_set_estimate
        if estimate is None:
            estimate = self.evaluator.training_set_means()
        return {"class_counts": estimate.counts, "resultant_lengths": estimate.resultant_lengths}

    def evaluate_best(self, out: Path) -> dict:
        """Scores the best checkpoint on this config's data, as :meth:`test` does, writing ``out/metrics.json`` and
        ``out/plots/retrieval_grid.png`` (on the main process) and nothing in the run folder.

        Raises:
            FileNotFoundError: when the run has no checkpoint.
        """
        path = self.checkpoints.load("best")
        metrics = self._test_metrics()
        if self.accelerator.is_main_process:
            metrics = {"checkpoint": path.name, "data_root": self.config.data.root, **metrics}
            target = RunFolder(out)
            target.write_final_metrics(metrics)
            self.evaluator.write_retrieval_grid(target.plots / "retrieval_grid.png")
        return metrics

    def test(self) -> dict:
        """Evaluates the best checkpoint (by validation ``eval.select_by``) on the test split; writes metrics, plots and
        the model."""
        best = self.checkpoints.load("best") if self.checkpoints.exists() else None
        metrics = self._test_metrics()
        means, kappa = self.loss.saved_means_and_kappa()
        statistics = self._class_statistics() if means is not None else None
        if self.accelerator.is_main_process:
            metrics = {"epoch": self.progress.best_epoch if best is not None else -1, **metrics}
            self.run.write_final_metrics(metrics)
            self.run.append_metrics({"split": "test", **metrics})
            save_run_model(
                self.run.model,
                self.config,
                self.unwrapped_model,
                means,
                kappa=kappa,
                class_names=self.splits.train.class_names,
                class_statistics=statistics,
            )
            self.evaluator.write_plots(self.run)
        self.log.finish()
        return metrics

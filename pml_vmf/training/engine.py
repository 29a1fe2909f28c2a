"""The training engine behind recipes/train.py: one class that trains, validates, checkpoints and tests.

Its pieces (accelerator, data, model, loss, optimizer, scheduler) are built by the functions of
:mod:`pml_vmf.training.builders`; this module holds what happens with them: the training step, the epoch, stopping
and resuming, evaluation and the files a run writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..class_means import ClassMeanEstimate, compute_class_means, ema_update_means
from ..data import RetrievalSplits, build_transforms, load_rgb
from ..evaluation import (
    build_accuracy_calculator,
    embed_dataset,
    nearest_mean_accuracy,
    plot_retrieval_grid,
    plot_training_curves,
    predict_with_loss,
    retrieval_metrics,
)
from ..models import EmbeddingModel
from .builders import (
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
from .config import RecipeConfig, save_config
from .export import save_run_model
from .interruptions import NonFiniteLossError, StopSignals, TrainingInterrupted
from .losses import TrainingLoss
from .memory import peak_memory_mb, reset_peak_memory
from .run_folder import RunFolder

SELECTION_METRIC = "mean_average_precision_at_r"


@dataclass
class TrainingProgress:
    """Where a run stands, checkpointed with it so that a resumed run continues exactly, mid-epoch included.

    Attributes:
        epoch: the epoch being trained (the next one, between epochs).
        step: the steps of ``epoch`` already taken.
        global_step: the steps taken since the start.
        loss_sum, loss_steps: the running sum of this epoch's training loss and its number of steps.
        best_score, best_epoch: the best validation score so far and its epoch.
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    loss_steps: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        if "step" not in state:  # written by 0.1.0.dev0 after a finished epoch, which `epoch` then named
            state = {**state, "epoch": state["epoch"] + 1}
        for key, value in state.items():
            setattr(self, key, value)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step, self.loss_sum, self.loss_steps = epoch, 0, 0.0, 0


class RecipeRun:
    """One training run of a recipe config, on however many processes ``accelerate launch`` started.

    SIGTERM or SIGINT (a cluster preempting the job, Ctrl-C) stops it after the current step with a mid-epoch
    checkpoint, from which ``--resume`` continues to the same end as a run that was never stopped. A NaN or inf
    training loss stops it before the step is applied, keeping the checkpoints as they were.

    Args:
        config: the resolved config.
        resume: continue the run folder's last checkpoint; its saved config is ``config``.
    """

    def __init__(self, config: RecipeConfig, resume: bool = False) -> None:
        self.config = c = config
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
        self.splits: RetrievalSplits = build_splits(c)
        self.num_classes = int(self.splits.train.labels.max()) + 1
        model = build_model(c)
        train_transform, self.eval_transform = build_transforms(
            model.backbone, c.data.image_size, train_scale=tuple(c.data.train_scale), hflip=c.data.hflip,
            color_jitter=c.data.color_jitter, mean=c.data.mean, std=c.data.std,
        )  # fmt: skip
        self.sampler = build_sampler(c, self.splits.train.labels, self.accelerator)
        self.train_loader = build_loader(c, self.splits.train, train_transform, batch_sampler=self.sampler)
        self.loss: TrainingLoss = build_loss(c, self.num_classes, self.accelerator)
        optimizer = build_optimizer(c, model, self.loss)
        self.scheduler = build_scheduler(c, optimizer, self.steps_per_epoch)
        eval_loaders = {
            name: build_loader(c, images, self.eval_transform, batch_size=c.eval.batch_size)
            for name, images in self._eval_sets().items()
        }
        # The train loader shards itself (MPerClassBatchSampler); the scheduler steps once per global step, so
        # neither goes through prepare(), which would shard or step them per process.
        self.model, self.optimizer, *loaders = self.accelerator.prepare(model, optimizer, *eval_loaders.values())
        self.eval_loaders = dict(zip(eval_loaders, loaders))
        self.progress = TrainingProgress()
        self.embeddings: dict = {}  # the last embeddings of each evaluated split, for the plots
        self.mean_estimate: Optional[ClassMeanEstimate] = None  # the vMF means' latest full-pass estimate
        self.checkpoints.shared = {"scheduler": self.scheduler, "loss": self.loss.loss, "sampler": self.sampler, "progress": self.progress}
        # The miner's running sums differ between processes until the next mean update: each saves its own.
        self.checkpoints.per_process = {"miner": self.loss.miner} if self.loss.miner is not None else {}
        self.calculator = build_accuracy_calculator(
            c.eval.recall_at, c.eval.metrics, knn=c.eval.knn, knn_batch_size=c.eval.knn_batch_size, device=self.device
        )
        self.stop_signals = StopSignals()
        self.stop_agreed = False  # every process has been told of a stop signal, after the last step
        if self.checkpoints.exists():  # only when resuming
            path = self.checkpoints.load("last")
            where = f"epoch {self.progress.epoch}" + (f", step {self.progress.step}" if self.progress.step else "")
            self.accelerator.print(f"Resumed from {path}; continuing at {where}.")
        elif self.run.holds_a_run():  # stopped before its first checkpoint (a crash, a bad setting): start it again
            self.accelerator.print(f"{self.run.root} holds no checkpoint yet: training it from the beginning.")
        if self.accelerator.is_main_process:
            self.run.truncate_logs(self.progress.epoch, self.progress.global_step)
            if not resume:
                save_config(config, self.run.config)
        if c.run.trackers:
            self.accelerator.init_trackers(c.run.name, config=_flat(config.to_dict()))

    @property
    def steps_per_epoch(self) -> int:
        limit = self.config.train.max_steps_per_epoch
        return len(self.sampler) if limit is None else min(limit, len(self.sampler))

    def _eval_sets(self) -> dict:
        sets = {"train": self.splits.train, "query": self.splits.query}
        if self.splits.val is not None:
            sets["val"] = self.splits.val
        if self.splits.reference is not None:
            sets["reference"] = self.splits.reference
        return sets

    @property
    def unwrapped_model(self) -> EmbeddingModel:
        return self.accelerator.unwrap_model(self.model)

    def _embed(self, name: str) -> tuple:
        return embed_dataset(
            self.model, self.eval_loaders[name], device=self.device, gather=self.accelerator.gather_for_metrics, autocast=self.accelerator.autocast
        )

    def full_pass_estimate(self) -> ClassMeanEstimate:
        """The class means (and their spread) of one pass over the training set: eval transforms, every sample once."""
        with self.accelerator.autocast():
            return compute_class_means(
                self.model, self.eval_loaders["train"], self.num_classes, device=self.device, gather=self.accelerator.gather_for_metrics
            )

    def refresh_means_with_full_pass(self) -> None:
        """Sets the vMF means from :meth:`full_pass_estimate` (the paper's mean step)."""
        self.mean_estimate = self.full_pass_estimate()
        self.loss.loss.means.copy_(self.mean_estimate.means)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimisation step; returns the training loss averaged over processes.

        Raises:
            NonFiniteLossError: when the loss is NaN or inf on any process; the step is not applied.
        """
        images, labels = images.to(self.device), labels.to(self.device)
        with self.accelerator.autocast():
            embeddings = self.model(images)
        loss = self.loss(embeddings, labels)
        # One reduction per step tells every process the mean loss, whether any process's loss is not finite, and
        # whether any process received a stop signal, so that all of them stop after the same step.
        value = loss.detach().float() / self.loss.backward_scale
        finite = torch.isfinite(value)
        stop = float(self.stop_signals.received is not None)
        state = torch.stack([torch.where(finite, value, 0.0), (~finite).float(), torch.tensor(stop, device=self.device)])
        if self.accelerator.num_processes > 1:
            state = self.accelerator.reduce(state, "sum")
        loss_sum, num_non_finite, num_stopping = state.tolist()
        self.stop_agreed = num_stopping > 0
        mean_loss = loss_sum / self.accelerator.num_processes
        if num_non_finite:
            self._raise_non_finite(value.item())
        self.accelerator.backward(loss)
        if self.config.loss.mean_ema is not None and self.loss.is_vmf:
            # The global batch, so that every process moves its means identically.
            ema_update_means(self.loss.loss.means, self.accelerator.gather(embeddings.detach().float()),
                             self.accelerator.gather(labels), self.config.loss.mean_ema)
        self.loss.sync_parameter_gradients()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
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
        bar = tqdm(total=self.steps_per_epoch, initial=progress.step, desc=f"epoch {epoch}", disable=not self.accelerator.is_local_main_process)
        with bar:  # closed before any message of a stop, so that the message is the last line
            for images, labels, _ in self.train_loader:
                if progress.step >= self.steps_per_epoch:
                    break
                loss = self.train_step(images, labels)
                progress.step += 1
                progress.global_step += 1
                progress.loss_sum += loss
                progress.loss_steps += 1
                bar.update()
                self._log_step(loss)
                if self.stop_agreed and progress.step < self.steps_per_epoch:
                    bar.close()
                    name, where = f"epoch_{epoch:04d}_step_{progress.step:06d}", f"epoch {epoch}, step {progress.step} of {self.steps_per_epoch}"
                    self._interrupt(name, where)
        self.loss.end_epoch()
        record = {}
        if self.loss.is_vmf and self.config.loss.mean_update == "full_pass":
            self.refresh_means_with_full_pass()
        if self.loss.is_vmf:
            if self.loss.miner is not None:
                record = self.loss.miner.diagnostics()
            else:
                record = self.mean_estimate.summary() if self.mean_estimate is not None else {}
            if self.loss.loss.learn_kappa:
                record["vmf/kappa"] = self.loss.loss.kappa
        seconds = time.perf_counter() - started  # the mean updates are part of the training cost
        images_seen = progress.loss_steps * self.config.train.batch_size
        return {
            "train_loss": progress.loss_sum / max(1, progress.loss_steps),
            "train_seconds": seconds,
            "images_per_second": images_seen / seconds,
            "peak_memory_mb": peak_memory_mb(self.device),
            **record,
        }

    def evaluate(self, query_set: str = "query", reference_set: Optional[str] = None) -> dict:
        """Retrieval metrics of one split, computed on the main process and returned on every process."""
        query, query_labels, indices = self._embed(query_set)
        reference = reference_labels = None
        if reference_set is not None:
            reference, reference_labels, _ = self._embed(reference_set)
        self.embeddings[query_set] = (query, query_labels)
        if reference_set is not None:
            self.embeddings[reference_set] = (reference, reference_labels)
        metrics: dict = {}
        if self.accelerator.is_main_process:
            metrics = retrieval_metrics(self.calculator, query, query_labels, reference, reference_labels)
            metrics["num_query"] = len(indices)
            metrics["num_unique_query"] = len(torch.unique(indices))
        return metrics

    def classification_metrics(self) -> dict:
        """Closed-set accuracy on the query embeddings of the last :meth:`evaluate`.

        ``nearest_mean_accuracy`` classifies by the class means of one full pass over the training set with the
        tested checkpoint, for every loss. ``classifier_accuracy`` uses the loss's own classifier (softmax layer,
        proxies); for vMF that is the same full-pass means, since the paper's alternating algorithm ends with a mean
        step, and the means the checkpoint held (up to ``update_every - 1`` steps stale) are kept as
        ``classifier_accuracy_stale_means``, a diagnostic. The vMF loss keeps the full-pass means, so the exported
        model carries them.
        """
        query, labels = self.embeddings["query"]
        means = self.full_pass_estimate().means
        metrics = {"nearest_mean_accuracy": nearest_mean_accuracy(query, labels, means.cpu())}
        if self.loss.is_vmf:
            stale = predict_with_loss(self.loss.loss, query.to(self.device))
            metrics["classifier_accuracy_stale_means"] = (stale == labels).float().mean().item()
            self.loss.loss.means.copy_(means)
        predictions = predict_with_loss(self.loss.loss, query.to(self.device))
        if predictions is not None:  # the loss's own classifier: vMF means, softmax layer, proxies
            metrics["classifier_accuracy"] = (predictions == labels).float().mean().item()
        return metrics

    def fit(self) -> Optional[dict]:
        """Trains from where the run stands to ``train.epochs``, then tests the best checkpoint.

        Returns:
            The final metrics (on the main process; ``{}`` elsewhere).

        Raises:
            TrainingInterrupted: after a stop signal or ``train.stop_after_epoch``, with a checkpoint to resume from.
            NonFiniteLossError: when the training loss is NaN or inf.
        """
        c = self.config
        if self.progress.global_step == 0 and self.loss.is_vmf and c.loss.init_full_pass:
            self.refresh_means_with_full_pass()
        self.stop_signals.install()
        try:
            for epoch in range(self.progress.epoch, c.train.epochs):
                if self._patience_exhausted(epoch):
                    break
                self._fit_epoch(epoch)
        finally:
            self.stop_signals.uninstall()
        return self.test()

    def _patience_exhausted(self, epoch: int) -> bool:
        """Whether ``train.early_stopping_patience`` epochs have passed since the best validation score, before
        training ``epoch``. Checked before an epoch rather than after one, so that resuming an early-stopped run
        does not train on. The same answer on every process: the best epoch is taken from the main process's score."""
        patience = self.config.train.early_stopping_patience
        if patience is None or self.splits.val is None or self.progress.best_epoch < 0:
            return False
        since_best = epoch - 1 - self.progress.best_epoch
        if since_best < patience:
            return False
        self.accelerator.print(
            f"Early stopping before epoch {epoch}: no better validation {SELECTION_METRIC} for {since_best} epochs "
            f"(train.early_stopping_patience={patience}); testing the best checkpoint, epoch {self.progress.best_epoch}."
        )
        return True

    def _fit_epoch(self, epoch: int) -> None:
        c = self.config
        trained = self.train_epoch(epoch)
        record = {"epoch": epoch, **trained}
        validation = {}
        is_best = False
        if self.splits.val is not None and ((epoch + 1) % c.eval.every == 0 or epoch + 1 == c.train.epochs):
            validation = self.evaluate("val")
            record.update(split="val", **validation)
            score = torch.tensor(record.get(SELECTION_METRIC, 0.0), device=self.device)
            score = self.accelerator.reduce(score, "sum").item()  # main process's value, on every process
            is_best = score > self.progress.best_score
            if is_best:
                self.progress.best_score, self.progress.best_epoch = score, epoch
        if self.accelerator.is_main_process:
            self.run.append_metrics(record)
            self._print_record(record)
        if c.run.trackers:  # at the global step, as the per-step values: one time axis for every tracker
            values = {("" if "/" in k else "epoch/") + k: v for k, v in trained.items()}
            values.update({f"val/{k}": v for k, v in validation.items() if isinstance(v, (int, float))})
            self.accelerator.log({"epoch": epoch, **values}, step=self.progress.global_step)
        self._check_finite_state()  # before the progress moves on, so that an error names this epoch
        self.progress.start_epoch(epoch + 1)
        path = self.checkpoints.save(f"epoch_{epoch:04d}", is_best=is_best or self.splits.val is None)
        if epoch + 1 == c.train.epochs:
            return
        if self._stop_requested():
            self._interrupt(path.name, f"the end of epoch {epoch}", saved=path)
        if c.train.stop_after_epoch is not None and epoch + 1 >= c.train.stop_after_epoch:
            self.finish_trackers()
            raise TrainingInterrupted(
                f"Stopped after epoch {epoch} (train.stop_after_epoch); continue with --resume {self.run.root}.", path, 0
            )

    def _stop_requested(self) -> bool:
        """Whether any process received a stop signal; the same answer on every process."""
        received = self.stop_signals.received is not None
        if self.accelerator.num_processes == 1:
            return received
        return self.accelerator.reduce(torch.tensor(float(received), device=self.device), "sum").item() > 0

    def _interrupt(self, name: str, where: str, saved: Optional[Path] = None) -> None:
        path = saved or self.checkpoints.save(name, is_best=False)
        self.finish_trackers()
        signum = self.stop_signals.received
        raise TrainingInterrupted(
            f"Stopped at {where} on {self.stop_signals.name or 'a stop signal from another process'}; checkpoint "
            f"{path} written. Continue with --resume {self.run.root}.",
            path,
            128 + (signum or 15),
        )

    def _raise_non_finite(self, local_loss: float) -> None:
        c, progress = self.config, self.progress
        last = self.checkpoints.path("last")
        kept = f"The last good checkpoint, {last}, is kept" if last else "No checkpoint had been written yet"
        hints = [f"optim.lr (now {c.optim.lr:g})"]
        if self.loss.parameters():
            hints.append(f"optim.loss_lr (now {c.optim.loss_lr:g})")
        if self.loss.is_vmf:
            hints.append(f"the vMF kappa (loss.params.vmf.kappa, now {self.loss.loss.kappa:g})")
        precision = "" if self.accelerator.mixed_precision != "fp16" else "; or train in bf16 instead of fp16 (run.mixed_precision=bf16)"
        self.finish_trackers()
        raise NonFiniteLossError(
            f"The training loss is not finite (this process: {local_loss}) at epoch {progress.epoch}, step "
            f"{progress.step + 1} of {self.steps_per_epoch} (global step {progress.global_step + 1}); the step was not "
            f"applied and nothing was saved. {kept}. Lower "
            f"{', or '.join(hints)}{precision}, then continue with --resume {self.run.root} (with the new values as "
            "overrides) or start a new run."
        )

    def _check_finite_state(self) -> None:
        """Never lets a checkpoint hold NaN weights or means, whatever let them through."""
        tensors = [*self.unwrapped_model.parameters(), *self.loss.loss.parameters(), *self.loss.loss.buffers()]
        if not torch.stack([torch.isfinite(t).all() for t in tensors]).all():  # one read-back, not one per tensor
            self._raise_non_finite(float("nan"))

    def _log_step(self, loss: float) -> None:
        progress = self.progress
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.accelerator.is_main_process:
            self.run.append_step(
                {"epoch": progress.epoch, "step": progress.step, "global_step": progress.global_step, "loss": loss, "lr": lrs}
            )
        if self.config.run.trackers:
            values = {"train/loss": loss, "train/lr": lrs[0], "train/lr_head": lrs[1]}
            self.accelerator.log(values, step=progress.global_step)

    def test(self) -> dict:
        """Evaluates the best checkpoint (by validation MAP@R) on the test split; writes metrics, plots and the model."""
        best = self.checkpoints.load("best") if self.checkpoints.exists() else None
        metrics = self.evaluate("query", "reference" if self.splits.reference is not None else None)
        if self.splits.test_classes_are_train_classes:
            metrics.update(self.classification_metrics())
        if self.accelerator.is_main_process:
            metrics = {"epoch": self.progress.best_epoch if best is not None else -1, **metrics}
            self.run.write_final_metrics(metrics)
            self.run.append_metrics({"split": "test", **metrics})
            self.save_model()
            self.write_plots()
        self.finish_trackers()
        return metrics

    def finish_trackers(self) -> None:
        """Closes the trackers. Unlike ``accelerator.end_training`` it keeps the process group, which belongs to
        the script: a benchmark trains several runs in one group; recipes/train.py ends it."""
        for tracker in self.accelerator.trackers:
            tracker.finish()

    def save_model(self) -> Path:
        """Writes the tested model as ``model/``, the folder :func:`pml_vmf.load_embedder` reads."""
        vmf = self.loss.loss if self.loss.is_vmf else None
        return save_run_model(
            self.run.model, self.config, self.unwrapped_model, vmf.means if vmf is not None else None,
            kappa=vmf.kappa if vmf is not None else None, class_names=self.splits.train.class_names,
        )  # fmt: skip

    def write_plots(self) -> list:
        records = self.run.read_metrics_log()
        paths = [plot_training_curves(records, self.run.plots / "training_curves.png", self.run.read_steps_log())]
        query, query_labels = self.embeddings["query"]
        reference = reference_labels = load_reference = None
        if self.splits.reference is not None:
            reference, reference_labels = self.embeddings["reference"]
            load_reference = lambda i: load_rgb(self.splits.reference, i)  # noqa: E731
        paths.append(
            plot_retrieval_grid(
                query,
                query_labels,
                lambda i: load_rgb(self.splits.query, i),
                self.run.plots / "retrieval_grid.png",
                reference=reference,
                reference_labels=reference_labels,
                load_reference_image=load_reference,
                num_queries=self.config.eval.grid_queries,
                seed=self.config.run.seed,
            )
        )
        return paths

    def _print_record(self, record: dict) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
        self.accelerator.print(" ".join(f"{k}={v}" for k, v in shown.items()))


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat

"""The training engine behind recipes/train.py: one function that trains, validates, checkpoints and tests."""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..class_means import compute_class_means
from ..data import ImageDataset, MPerClassBatchSampler, RetrievalSplits, build_transforms, load_protocol, load_rgb
from ..evaluation import (
    build_accuracy_calculator,
    embed_dataset,
    nearest_mean_accuracy,
    plot_retrieval_grid,
    plot_training_curves,
    predict_with_loss,
    retrieval_metrics,
)
from .checkpoints import CheckpointKeeper
from .config import ConfigError, RecipeConfig, save_config
from .losses import LOSSES, TrainingLoss, build_training_loss
from .model import EmbeddingModel, create_embedding_model
from .run_folder import RunFolder

SELECTION_METRIC = "mean_average_precision_at_r"


@dataclass
class TrainingProgress:
    """What a resumed run needs besides the states accelerate saves: the next epoch and the best validation score."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.best_score, self.best_epoch = state["epoch"], state["best_score"], state["best_epoch"]


def multiprocess_without_cuda() -> bool:
    """Whether accelerate must be told ``cpu=True``: several processes (``accelerate launch --multi_gpu`` on a CPU
    machine) run as gloo MULTI_CPU only then; accelerate would otherwise start unconnected single processes. Pass
    it to the first ``Accelerator`` or ``PartialState`` of a process: they share one state."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


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


def _lr_lambdas(num_groups: int, total_steps: int, head_warmup_steps: int, cosine: bool) -> list:
    def decay(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))) if cosine else 1.0

    def backbone(step: int) -> float:
        return 0.0 if step < head_warmup_steps else decay(step)

    return [backbone] + [decay] * (num_groups - 1)


class RecipeRun:
    """One training run of a recipe config, on however many processes ``accelerate launch`` started.

    Args:
        config: the resolved config.
        resume: a run folder to continue from its last checkpoint; its saved config is ``config``.
    """

    def __init__(self, config: RecipeConfig, resume: bool = False) -> None:
        self.config = config
        c = config
        self.accelerator = Accelerator(
            cpu=multiprocess_without_cuda(),
            mixed_precision="no" if c.run.mixed_precision is False else c.run.mixed_precision,  # YAML reads `no` as false
            log_with=c.run.trackers or None,
            project_dir=str(Path(c.run.output_dir) / c.run.name),
        )
        self.run = RunFolder(Path(c.run.output_dir) / c.run.name)
        if not resume and self.run.holds_a_run():
            raise FileExistsError(
                f"{self.run.root} already holds a run. Continue it with --resume {self.run.root}, or choose another "
                "run.name; nothing was overwritten."
            )
        set_seed(c.run.seed)
        self.device = self.accelerator.device
        self.splits: RetrievalSplits = load_protocol(
            c.data.dataset,
            c.data.root,
            protocol=c.data.protocol,
            val_fraction=c.data.val_fraction,
            val_by=c.data.val_by,
            check_protocol=c.data.check_protocol,
            max_images_per_class=c.data.max_images_per_class,
            seed=c.run.seed,
        )
        self.num_classes = int(self.splits.train.labels.max()) + 1
        model = create_embedding_model(
            c.model.backbone,
            c.model.embedding_size,
            pretrained=c.model.pretrained,
            pretrained_file=c.model.pretrained_file,
            freeze_batchnorm=c.model.freeze_batchnorm,
        )
        train_transform, self.eval_transform = build_transforms(
            model.backbone, c.data.image_size, train_scale=tuple(c.data.train_scale), hflip=c.data.hflip, color_jitter=c.data.color_jitter,
            mean=c.data.mean, std=c.data.std,
        )
        self.sampler = MPerClassBatchSampler(
            self.splits.train.labels,
            c.train.batch_size,
            c.train.samples_per_class,
            seed=c.run.seed,
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
        )
        self.train_loader = torch.utils.data.DataLoader(
            ImageDataset(self.splits.train, train_transform),
            batch_sampler=self.sampler,
            num_workers=c.data.num_workers,
            persistent_workers=c.data.num_workers > 0,
        )
        self.loss: TrainingLoss = build_training_loss(
            c.loss.name,
            self.num_classes,
            c.model.embedding_size,
            params=_per_loss(c.loss.params, "loss.params", c.loss.name),
            miner_params=_per_loss(c.loss.miner_params, "loss.miner_params", c.loss.name),
            use_miner=not (c.loss.name == "vmf" and c.loss.mean_update == "full_pass"),
            distributed=self.accelerator.num_processes > 1,
        )
        if c.loss.mean_update not in ("miner", "full_pass"):
            raise ConfigError(f"loss.mean_update must be miner or full_pass, got {c.loss.mean_update!r}.")
        self.loss.loss.to(self.device)
        if self.loss.miner is not None:
            self.loss.miner.to(self.device)
        groups = [
            {"params": list(model.backbone.parameters()), "lr": c.optim.lr},
            {"params": list(model.head.parameters()), "lr": c.optim.lr},
        ]
        if self.loss.parameters():
            groups.append({"params": self.loss.parameters(), "lr": c.optim.loss_lr})
        if c.optim.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, weight_decay=c.optim.weight_decay)
        elif c.optim.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=c.optim.weight_decay)
        else:
            raise ConfigError(f"optim.optimizer must be adamw or sgd, got {c.optim.optimizer!r}.")
        steps_per_epoch = self.steps_per_epoch
        if c.optim.scheduler not in ("cosine", "constant"):
            raise ConfigError(f"optim.scheduler must be cosine or constant, got {c.optim.scheduler!r}.")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            _lr_lambdas(len(groups), c.train.epochs * steps_per_epoch, c.optim.head_warmup_epochs * steps_per_epoch, c.optim.scheduler == "cosine"),
        )
        self.eval_loaders = {name: self._eval_loader(images) for name, images in self._eval_sets().items()}
        # The train loader shards itself (MPerClassBatchSampler); the scheduler steps once per global step, so
        # neither goes through prepare(), which would shard or step them per process.
        self.model, self.optimizer, *loaders = self.accelerator.prepare(model, optimizer, *self.eval_loaders.values())
        self.eval_loaders = dict(zip(self.eval_loaders, loaders))
        self.progress = TrainingProgress()
        self.embeddings: dict = {}  # the last embeddings of each evaluated split, for the plots
        checkpointed = [self.scheduler, self.loss.loss, self.sampler, self.progress]
        if self.loss.miner is not None:
            checkpointed.append(self.loss.miner)
        self.accelerator.register_for_checkpointing(*checkpointed)
        self.checkpoints = CheckpointKeeper(self.accelerator, self.run.checkpoints)
        self.calculator = build_accuracy_calculator(
            c.eval.recall_at, c.eval.metrics, knn=c.eval.knn, knn_batch_size=c.eval.knn_batch_size, device=self.device
        )
        if resume:
            path = self.checkpoints.load("last")
            self.progress.epoch += 1
            self.accelerator.print(f"Resumed from {path}; continuing at epoch {self.progress.epoch}.")
            if self.accelerator.is_main_process:
                self.run.truncate_metrics_log(self.progress.epoch - 1)
        elif self.accelerator.is_main_process:
            self.run.root.mkdir(parents=True, exist_ok=True)
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

    def _eval_loader(self, images) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            ImageDataset(images, self.eval_transform),
            batch_size=self.config.eval.batch_size,
            num_workers=self.config.data.num_workers,
        )

    @property
    def unwrapped_model(self) -> EmbeddingModel:
        return self.accelerator.unwrap_model(self.model)

    def _embed(self, name: str) -> tuple:
        return embed_dataset(
            self.model, self.eval_loaders[name], device=self.device, gather=self.accelerator.gather_for_metrics, autocast=self.accelerator.autocast
        )

    def full_pass_means(self) -> torch.Tensor:
        """The class means of one pass over the training set (eval transforms, every sample once)."""
        with self.accelerator.autocast():
            return compute_class_means(
                self.model, self.eval_loaders["train"], self.num_classes, device=self.device, gather=self.accelerator.gather_for_metrics
            ).means

    def refresh_means_with_full_pass(self) -> None:
        """Sets the vMF means from :meth:`full_pass_means`."""
        self.loss.loss.means.copy_(self.full_pass_means())

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        self.sampler.set_epoch(epoch)
        total = torch.zeros(2, device=self.device)  # loss sum, steps
        reset_peak_memory(self.device)
        started = time.perf_counter()
        bar = tqdm(self.train_loader, total=self.steps_per_epoch, desc=f"epoch {epoch}", disable=not self.accelerator.is_local_main_process)
        for step, (images, labels, _) in enumerate(bar):
            if step >= self.steps_per_epoch:
                break
            images, labels = images.to(self.device), labels.to(self.device)
            with self.accelerator.autocast():
                embeddings = self.model(images)
            loss = self.loss(embeddings, labels)
            self.accelerator.backward(loss)
            self.loss.sync_parameter_gradients()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            total += torch.stack([loss.detach().float() / self.loss.backward_scale, torch.ones((), device=self.device)])
        self.loss.end_epoch()
        if self.loss.is_vmf and self.config.loss.mean_update == "full_pass":
            self.refresh_means_with_full_pass()
        seconds = time.perf_counter() - started  # the mean updates are part of the training cost
        total = self.accelerator.reduce(total, "sum")
        images_seen = int(total[1].item()) // self.accelerator.num_processes * self.config.train.batch_size
        return {
            "train_loss": (total[0] / total[1]).item(),
            "train_seconds": seconds,
            "images_per_second": images_seen / seconds,
            "peak_memory_mb": peak_memory_mb(self.device),
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

    def nearest_mean_accuracy(self) -> float:
        """Test accuracy of the nearest class mean (the vMF means, or a full pass's means for other losses), on the
        query embeddings of the last :meth:`evaluate`."""
        means = self.loss.loss.means if self.loss.is_vmf else self.full_pass_means()
        query, labels = self.embeddings["query"]  # embedded by evaluate() just before
        return nearest_mean_accuracy(query, labels, means.cpu())

    def fit(self) -> Optional[dict]:
        """Trains from the current epoch to ``train.epochs``, then tests the best checkpoint.

        Returns:
            The final metrics (on the main process; ``{}`` elsewhere), or None when ``train.stop_after_epoch`` stopped
            the run before the end.
        """
        c = self.config
        if self.progress.epoch == 0 and self.loss.is_vmf and c.loss.init_full_pass:
            self.refresh_means_with_full_pass()
        for epoch in range(self.progress.epoch, c.train.epochs):
            self.progress.epoch = epoch
            record = {"epoch": epoch, **self.train_epoch(epoch)}
            is_best = False
            if self.splits.val is not None and ((epoch + 1) % c.eval.every == 0 or epoch + 1 == c.train.epochs):
                record.update(split="val", **self.evaluate("val"))
                score = torch.tensor(record.get(SELECTION_METRIC, 0.0), device=self.device)
                score = self.accelerator.reduce(score, "sum").item()  # main process's value, on every process
                is_best = score > self.progress.best_score
                if is_best:
                    self.progress.best_score, self.progress.best_epoch = score, epoch
            if self.accelerator.is_main_process:
                self.run.append_metrics(record)
                self._print_record(record)
            if c.run.trackers:
                self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=epoch)
            self.checkpoints.save(epoch, is_best=is_best or self.splits.val is None)
            if c.train.stop_after_epoch is not None and epoch + 1 >= c.train.stop_after_epoch and epoch + 1 < c.train.epochs:
                self.accelerator.print(f"Stopped after epoch {epoch} (train.stop_after_epoch); continue with --resume {self.run.root}.")
                self.finish_trackers()
                return None
        return self.test()

    def test(self) -> dict:
        """Evaluates the best checkpoint (by validation MAP@R) on the test split; writes metrics, plots and the model."""
        best = self.checkpoints.path("best")
        if best is not None:
            self.accelerator.load_state(str(best))
        metrics = self.evaluate("query", "reference" if self.splits.reference is not None else None)
        if self.splits.test_classes_are_train_classes:
            metrics["nearest_mean_accuracy"] = self.nearest_mean_accuracy()
            query, labels = self.embeddings["query"]
            predictions = predict_with_loss(self.loss.loss, query.to(self.device))
            if predictions is not None:  # the loss's own classifier: vMF means, softmax layer, proxies
                metrics["classifier_accuracy"] = (predictions == labels).float().mean().item()
        if self.accelerator.is_main_process:
            metrics = {"epoch": self.progress.best_epoch if best is not None else -1, **metrics}
            self.run.write_final_metrics(metrics)
            self.run.append_metrics({"split": "test", **metrics})
            self.export_embedding_model()
            self.write_plots()
        self.finish_trackers()
        return metrics

    def finish_trackers(self) -> None:
        """Closes the trackers. Unlike ``accelerator.end_training`` it keeps the process group, which belongs to
        the script: a benchmark trains several runs in one group; recipes/train.py ends it."""
        for tracker in self.accelerator.trackers:
            tracker.finish()

    def export_embedding_model(self) -> Path:
        """Saves what :func:`load_embedding_model` needs: the architecture's config and the weights (and vMF means)."""
        payload = {
            "backbone": self.config.model.backbone,
            "embedding_size": self.config.model.embedding_size,
            "freeze_batchnorm": self.config.model.freeze_batchnorm,
            "image_size": self.config.data.image_size,
            "state_dict": self.unwrapped_model.state_dict(),
            "class_means": self.loss.loss.means.cpu() if self.loss.is_vmf else None,
        }
        tmp = self.run.embedding_model.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.run.embedding_model)
        return self.run.embedding_model

    def write_plots(self) -> list:
        records = self.run.read_metrics_log()
        paths = [plot_training_curves(records, self.run.plots / "training_curves.png")]
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


def _per_loss(table: dict, key: str, name: str) -> dict:
    unknown = [loss for loss in table if loss not in LOSSES]
    if unknown:
        raise ConfigError(f"{key} is keyed by loss name ({', '.join(LOSSES)}); {', '.join(map(str, unknown))} is not one.")
    return table.get(name) or {}


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def load_embedding_model(path: str | Path) -> EmbeddingModel:
    """Rebuilds the embedding model a run exported (``runs/<name>/embedding_model.pt``), in eval mode, on the CPU."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = create_embedding_model(payload["backbone"], payload["embedding_size"], freeze_batchnorm=payload["freeze_batchnorm"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()

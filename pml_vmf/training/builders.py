"""The pieces of a recipe run, each built from the config by one function: :class:`RecipeRun` composes them."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator

from ..data import (
    DecodedImageCache,
    ImageDataset,
    LabelledImages,
    MPerClassBatchSampler,
    RetrievalSplits,
    load_protocol,
)
from ..input_checks import is_finite_number, is_int_at_least
from ..models import EmbeddingModel, create_embedding_model
from .config import ConfigError, RecipeConfig
from .evaluator import CLASSIFIER_ACCURACY
from .interruptions import ignore_stop_signals_in_worker
from .losses import LOSSES, TrainingLoss, build_training_loss
from .mean_schedule import check_mean_settings, class_shard, miner_settings


def multiprocess_without_cuda() -> bool:
    """Whether accelerate must be told ``cpu=True``: several processes (``accelerate launch --multi_gpu`` on a CPU
    machine) run as gloo MULTI_CPU only then; accelerate would otherwise start unconnected single processes. Pass
    it to the first ``Accelerator`` or ``PartialState`` of a process: they share one state."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


# Counts that must be positive (or at least 0), checked before a run folder or anything else is made.
POSITIVE_KEYS = (
    "train.batch_size",
    "train.samples_per_class",
    "data.image_size",
    "eval.batch_size",
    "model.embedding_size",
    "eval.every",
)
NON_NEGATIVE_KEYS = ("train.epochs", "data.num_workers", "optim.head_warmup_epochs")


def _config_value(c: RecipeConfig, dotted_key: str):
    section, key = dotted_key.split(".")
    return getattr(getattr(c, section), key)


def check_ranges(c: RecipeConfig) -> None:
    """Rejects values outside their range (rates, probabilities, crop scales, normalisation), naming the key."""
    for key, value, rule, ok in (
        (
            "optim.lr",
            c.optim.lr,
            "a number >= 0 (0 freezes the network)",
            is_finite_number(c.optim.lr) and c.optim.lr >= 0,
        ),
        ("optim.loss_lr", c.optim.loss_lr, "a number >= 0", is_finite_number(c.optim.loss_lr) and c.optim.loss_lr >= 0),
        (
            "optim.backbone_lr",
            c.optim.backbone_lr,
            "a number >= 0 or null",
            c.optim.backbone_lr is None or (is_finite_number(c.optim.backbone_lr) and c.optim.backbone_lr >= 0),
        ),
        (
            "optim.weight_decay",
            c.optim.weight_decay,
            "a number >= 0",
            is_finite_number(c.optim.weight_decay) and c.optim.weight_decay >= 0,
        ),
        (
            "data.hflip",
            c.data.hflip,
            "a probability in [0, 1]",
            is_finite_number(c.data.hflip) and 0 <= c.data.hflip <= 1,
        ),
        (
            "data.color_jitter",
            c.data.color_jitter,
            "a number in [0, 1]",
            is_finite_number(c.data.color_jitter) and 0 <= c.data.color_jitter <= 1,
        ),
        (
            "data.val_fraction",
            c.data.val_fraction,
            "a share in [0, 1)",
            is_finite_number(c.data.val_fraction) and 0 <= c.data.val_fraction < 1,
        ),
        (
            "data.max_images_per_class",
            c.data.max_images_per_class,
            "an integer >= 1 or null",
            c.data.max_images_per_class is None or is_int_at_least(c.data.max_images_per_class, 1),
        ),
        (
            "data.train_scale",
            c.data.train_scale,
            "[low, high] with 0 < low <= high <= 1 (shares of the image area)",
            isinstance(c.data.train_scale, list)
            and len(c.data.train_scale) == 2
            and all(is_finite_number(v) for v in c.data.train_scale)
            and 0 < c.data.train_scale[0] <= c.data.train_scale[1] <= 1,
        ),
        (
            "eval.recall_at",
            c.eval.recall_at,
            "a list of integers >= 1, e.g. [1, 2, 4, 8]",
            isinstance(c.eval.recall_at, list) and all(is_int_at_least(k, 1) for k in c.eval.recall_at),
        ),
        (
            "run.name",
            c.run.name,
            "a folder name (not empty, no '/')",
            isinstance(c.run.name, str) and c.run.name.strip() not in ("", ".", "..") and "/" not in c.run.name,
        ),
        (
            "run.output_dir",
            c.run.output_dir,
            "a folder path",
            isinstance(c.run.output_dir, str) and c.run.output_dir.strip() != "",
        ),
        (
            "eval.metrics",
            c.eval.metrics,
            "a list of AccuracyCalculator metric names",
            isinstance(c.eval.metrics, list) and all(isinstance(m, str) for m in c.eval.metrics),
        ),
    ):
        if not ok:
            raise ConfigError(f"{key} must be {rule}, got {value!r}.")
    for key, value, positive in (("data.mean", c.data.mean, False), ("data.std", c.data.std, True)):
        if value is None:
            continue
        if not (isinstance(value, list) and len(value) == 3 and all(is_finite_number(v) for v in value)) or (
            positive and min(value) <= 0
        ):
            need = "three numbers > 0 (one per RGB channel)" if positive else "three numbers (one per RGB channel)"
            raise ConfigError(f"{key} must be {need}, or null for the backbone's own; got {value!r}.")


def check_config(c: RecipeConfig) -> None:
    """Rejects settings that are out of range or contradict each other, before anything is loaded or written."""
    for keys, least in ((POSITIVE_KEYS, 1), (NON_NEGATIVE_KEYS, 0)):
        for key in keys:
            value = _config_value(c, key)
            if not is_int_at_least(value, least):
                raise ConfigError(f"{key} must be an integer of at least {least}, got {value!r}.")
    if c.train.max_steps_per_epoch is not None and c.train.max_steps_per_epoch < 1:
        raise ConfigError(
            f"train.max_steps_per_epoch must be at least 1 (or null for whole epochs), got {c.train.max_steps_per_epoch}."
        )
    check_ranges(c)
    check_mean_settings(c)
    if c.optim.optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"optim.optimizer must be adamw or sgd, got {c.optim.optimizer!r}.")
    if c.optim.scheduler not in ("cosine", "constant"):
        raise ConfigError(f"optim.scheduler must be cosine or constant, got {c.optim.scheduler!r}.")
    patience = c.train.early_stopping_patience
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(
            f"train.early_stopping_patience is a number of epochs without a better validation score (eval.select_by), at least 1 "
            f"(e.g. 3), or null to train all train.epochs; got {patience!r}."
        )
    selectable = [*c.eval.metrics, *(f"recall_at_{k}" for k in c.eval.recall_at), CLASSIFIER_ACCURACY]
    if c.eval.select_by not in selectable:
        raise ConfigError(
            f"eval.select_by picks the tested checkpoint by a validation metric: one of {', '.join(selectable)} "
            f"(eval.metrics, Recall@K of eval.recall_at, or the loss's own classifier on a closed set); got {c.eval.select_by!r}."
        )
    for key, by_loss in (
        ("loss.params", c.loss.params),
        ("loss.miner_params", c.loss.miner_params),
        ("by_loss", c.by_loss),
    ):
        unknown = [loss for loss in by_loss if loss not in LOSSES]
        if unknown:
            raise ConfigError(
                f"{key} is keyed by loss name ({', '.join(LOSSES)}); {', '.join(map(str, unknown))} is not one."
            )


def build_accelerator(c: RecipeConfig) -> Accelerator:
    return Accelerator(
        cpu=multiprocess_without_cuda(),
        mixed_precision="no" if c.run.mixed_precision is False else c.run.mixed_precision,  # YAML reads `no` as false
        log_with=c.run.trackers or None,
        project_dir=str(Path(c.run.output_dir) / c.run.name),
    )


def build_splits(c: RecipeConfig) -> RetrievalSplits:
    return load_protocol(
        c.data.dataset,
        c.data.root,
        protocol=c.data.protocol,
        val_fraction=c.data.val_fraction,
        val_by=c.data.val_by,
        check_protocol=c.data.check_protocol,
        max_images_per_class=c.data.max_images_per_class,
        seed=c.run.seed,
    )


def build_model(c: RecipeConfig) -> EmbeddingModel:
    """The embedding network; in channels-last memory format with ``run.channels_last`` (inputs follow the weights'
    format in every convolution, so the loaders' images need no conversion)."""
    model = create_embedding_model(
        c.model.backbone,
        c.model.embedding_size,
        pretrained=c.model.pretrained,
        pretrained_file=c.model.pretrained_file,
        freeze_batchnorm=c.model.freeze_batchnorm,
        global_pool=c.model.global_pool,
        feature_layernorm=c.model.feature_layernorm,
    )
    return model.to(memory_format=torch.channels_last) if c.run.channels_last else model


def build_sampler(
    c: RecipeConfig, labels, accelerator: Accelerator, held_out_classes: int = 0
) -> MPerClassBatchSampler:
    """The class-balanced batch sampler of the training split; ``held_out_classes``: how many classes the
    validation split took, named in the error when too few classes are left for one batch."""
    try:
        return MPerClassBatchSampler(
            labels, c.train.batch_size, c.train.samples_per_class, seed=c.run.seed, rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )  # fmt: skip
    except ValueError as error:
        if not held_out_classes or "needs" not in str(error):
            raise
        raise ValueError(
            f"{error} ({held_out_classes} other classes are held out for validation: data.val_fraction="
            f"{c.data.val_fraction:g} by classes; lower it, or validate by images with data.val_by=images.)"
        ) from None


def build_loader(
    c: RecipeConfig, images: LabelledImages, transform: Callable, *, cache: bool = False, **kwargs
) -> torch.utils.data.DataLoader:
    """A loader of ``(image, label, index)``; ``kwargs`` give its ``batch_sampler`` or its ``batch_size``. With
    ``cache`` (an eval transform), a :class:`DecodedImageCache` read in this process, without workers."""
    dataset = DecodedImageCache(images, transform) if cache else ImageDataset(images, transform)
    workers = 0 if cache else c.data.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=workers,
        persistent_workers=workers > 0 and "batch_sampler" in kwargs,
        worker_init_fn=ignore_stop_signals_in_worker if workers > 0 else None,
        **kwargs,
    )


def build_loss(c: RecipeConfig, num_classes: int, accelerator: Accelerator) -> TrainingLoss:
    params = dict(c.loss.params.get(c.loss.name) or {})
    miner_params = c.loss.miner_params.get(c.loss.name) or {}
    use_miner = True
    if c.loss.name == "vmf":  # its miner and shard come from loss.means
        shard = class_shard(c, num_classes, accelerator.process_index, accelerator.num_processes)
        params.update({"shard": shard} if shard is not None else {})
        miner_params = miner_settings(c)
        use_miner = miner_params is not None
    loss = build_training_loss(
        c.loss.name,
        num_classes,
        c.model.embedding_size,
        params=params,
        miner_params=miner_params,
        use_miner=use_miner,
        distributed=accelerator.num_processes > 1,
    )
    loss.loss.to(accelerator.device)
    if loss.miner is not None:
        loss.miner.to(accelerator.device)
    return loss


def group_settings(c: RecipeConfig, groups: list) -> list:
    """``(config key, learning rate, weight decay)`` of each parameter group, in :func:`build_optimizer`'s order:
    backbone (``optim.backbone_lr``, default ``optim.lr``), head (``optim.lr``), then the loss's own parameters
    (``optim.loss_lr``); scalars (a learned kappa) without weight decay, which would pull them to 0."""
    backbone_key = "optim.lr" if c.optim.backbone_lr is None else "optim.backbone_lr"
    settings = [(backbone_key, c.optim.lr if c.optim.backbone_lr is None else c.optim.backbone_lr, c.optim.weight_decay),
                ("optim.lr", c.optim.lr, c.optim.weight_decay)]  # fmt: skip
    for params in groups[2:]:
        settings.append(
            ("optim.loss_lr", c.optim.loss_lr, 0.0 if all(p.ndim == 0 for p in params) else c.optim.weight_decay)
        )
    return settings


def build_optimizer(c: RecipeConfig, model: EmbeddingModel, loss: TrainingLoss) -> torch.optim.Optimizer:
    """AdamW or SGD over the parameter groups of :func:`group_settings`: backbone, head, and the loss's own parameters
    (proxies; a learned kappa in a group of its own)."""
    scalars = [p for p in loss.parameters() if p.ndim == 0]
    tensors = [p for p in loss.parameters() if p.ndim > 0]
    params = [list(model.backbone.parameters()), list(model.head.parameters())] + [g for g in (tensors, scalars) if g]
    groups = [
        {"params": p, "lr": lr, "weight_decay": decay} for p, (_, lr, decay) in zip(params, group_settings(c, params))
    ]
    if c.optim.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.SGD(groups, momentum=0.9, nesterov=True)


def lr_lambdas(num_groups: int, total_steps: int, head_warmup_steps: int, cosine: bool) -> list:
    """Per parameter group, the learning-rate factor at a step: cosine decay (or constant), and the backbone (the
    first group) frozen at 0 for the head warm-up."""

    def decay(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))) if cosine else 1.0

    def backbone(step: int) -> float:
        return 0.0 if step < head_warmup_steps else decay(step)

    return [backbone] + [decay] * (num_groups - 1)


def apply_optimizer_settings(
    c: RecipeConfig, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR
) -> list:
    """Puts ``c``'s learning rates and weight decay (:func:`group_settings`) into a restored optimizer and schedule (a
    resumed run's overrides), keeping the schedule's position; returns ``["optim.lr 0.001 -> 0.0005", ...]`` for
    what changed."""
    changed = {}
    settings = group_settings(c, [group["params"] for group in optimizer.param_groups])
    for i, (group, (key, base, decay)) in enumerate(zip(optimizer.param_groups, settings)):
        if scheduler.base_lrs[i] != base:
            changed.setdefault(key, f"{key} {scheduler.base_lrs[i]:g} -> {base:g}")
        if group.get("weight_decay") != decay:
            changed.setdefault("optim.weight_decay", f"optim.weight_decay {group.get('weight_decay'):g} -> {decay:g}")
        group["weight_decay"] = decay
        scheduler.base_lrs[i] = group["initial_lr"] = base
        group["lr"] = base * scheduler.lr_lambdas[i](scheduler.last_epoch)
    return list(changed.values())


def build_scheduler(
    c: RecipeConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per global step (not per process), so it is not passed through ``accelerator.prepare``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambdas(
            len(optimizer.param_groups),
            c.train.epochs * steps_per_epoch,
            c.optim.head_warmup_epochs * steps_per_epoch,
            c.optim.scheduler == "cosine",
        ),
    )

"""When a loss's class means change during a run: the one home of the vMF mean step's schedule.

:func:`build_mean_schedule` gives the engine one object whose hooks it calls at fixed points (before training,
after each step, at the end of each epoch, before the closed-set test); for losses without means every hook does
nothing, so the engine never asks which loss it trains.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..class_means import ClassMeanEstimate, ema_update_means
from ..errors import ConfigError
from ..global_mean_miner import GlobalMeanMiner
from ..sharding import ClassShard
from .config import RecipeConfig
from .losses import TrainingLoss

SOURCES = ("miner", "full_pass")


def check_mean_settings(c: RecipeConfig) -> None:
    """Rejects ``loss.means`` settings that are unknown or contradict each other, before anything is loaded."""
    m, vmf = c.loss.means, c.loss.name == "vmf"
    if m.source not in SOURCES:
        raise ConfigError(f"loss.means.source must be miner or full_pass, got {m.source!r}.")
    if vmf and m.source == "full_pass" and not m.init_full_pass:
        raise ConfigError(
            "loss.means.source=full_pass trains without the miner, so with loss.means.init_full_pass=false the vMF "
            "means would be zero for the whole first epoch. Set loss.means.init_full_pass=true, or use source=miner."
        )
    for key in ("publish_every", "full_pass_every"):
        every = getattr(m, key)
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ConfigError(
                f"loss.means.{key} is a number of {'steps' if key == 'publish_every' else 'epochs'}, at least 1 (or null), got {every!r}."
            )
    if vmf and m.full_pass_every is not None and m.source != "miner":
        raise ConfigError(
            "loss.means.full_pass_every adds full passes to the miner's means; loss.means.source=full_pass already "
            "passes after every epoch. Set loss.means.source=miner, or remove loss.means.full_pass_every."
        )
    for key in ("momentum", "ema"):
        value = getattr(m, key)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"loss.means.{key} is the share of the old mean kept, in [0, 1) (e.g. 0.9), got {value}.")
    for key, on in (("ema", m.ema is not None), ("shard", m.shard)):
        if on and not vmf:
            raise ConfigError(
                f"loss.means.{key} acts on vMF's class means; {c.loss.name} has none. Remove it or set loss.name=vmf."
            )
    if m.shard and m.ema is not None:
        raise ConfigError("loss.means.ema does not work with loss.means.shard yet: remove one of them.")


def miner_settings(c: RecipeConfig) -> Optional[dict]:
    """``GlobalMeanMiner``'s keyword arguments for a vMF run, or None where the means come from full passes alone
    (the loss is then built without its miner)."""
    m = c.loss.means
    return None if m.source == "full_pass" else {"update_every": m.publish_every, "momentum": m.momentum}


def class_shard(c: RecipeConfig, num_classes: int, rank: int, world_size: int) -> Optional[ClassShard]:
    """The range of the classes whose means this process holds (``loss.means.shard`` on several processes)."""
    if not (c.loss.means.shard and world_size > 1):
        return None
    return ClassShard.contiguous(num_classes, rank=rank, world_size=world_size)


class MeanSchedule:
    """The schedule of a loss without class means: every hook does nothing.

    Attributes:
        holds_means: whether the loss classifies by means that the schedule sets (vMF).
    """

    holds_means = False

    def before_training(self, global_step: int) -> None:
        """Called once before the first step of a run (``global_step`` > 0 when resuming)."""

    def after_step(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Called after every optimisation step with the step's (local) embeddings and labels."""

    def end_epoch(self, epoch: int) -> dict:
        """Called at the end of every epoch, on every process; returns diagnostics for the epoch's record."""
        return {}

    def set_means(self, means: torch.Tensor) -> None:
        """Replaces the means by ``means`` (the closed-set test's final mean step)."""


class VMFMeanSchedule(MeanSchedule):
    """The vMF mean step: the paper's alternating algorithm, network step and mean step, as ``loss.means`` sets it.

    * ``init_full_pass``: the means of one full pass over the training set before the first step.
    * ``source=miner``: :class:`GlobalMeanMiner` publishes the means every ``publish_every`` steps, or at the end
      of each epoch when it is None (the paper's once-per-epoch step, at no extra cost).
    * ``source=full_pass``: a full pass after every epoch instead (exact; costs a pass).
    * ``full_pass_every=N`` with the miner: a full pass after every N-th epoch replaces the miner's means (the
      miner's sums of the epoch's own training embeddings in between, at no cost).
    * ``ema``: after every step, the batch's classes move towards its embeddings (CIDER's prototype EMA).

    Args:
        loss: the training loss (``VMFLoss`` and its miner, or no miner for ``source=full_pass``).
        full_pass: computes the class means of one pass over the training set (eval transforms), on every process.
        gather: gathers a tensor from every process (identity on one), so that every process moves its means alike.
        source, init_full_pass, ema, full_pass_every: the ``loss.means`` settings of the same names.
    """

    holds_means = True

    def __init__(
        self,
        loss: TrainingLoss,
        full_pass: Callable[[], ClassMeanEstimate],
        gather: Callable[[torch.Tensor], torch.Tensor],
        *,
        source: str = "miner",
        init_full_pass: bool = True,
        ema: Optional[float] = None,
        full_pass_every: Optional[int] = None,
    ) -> None:
        self.vmf = loss.loss
        self.miner: Optional[GlobalMeanMiner] = loss.miner
        self.full_pass, self.gather = full_pass, gather
        self.source, self.init_full_pass, self.ema = source, init_full_pass, ema
        self.full_pass_every = 1 if source == "full_pass" else full_pass_every
        self.last_full_pass: Optional[ClassMeanEstimate] = None
        if source == "full_pass":
            self.vmf.expect_mean_updates_every(None)  # refreshed after every epoch, however long an epoch is

    def refresh_with_full_pass(self) -> None:
        """Sets the means from one pass over the training set (the paper's mean step)."""
        self.last_full_pass = self.full_pass()
        self.vmf.means.copy_(self.last_full_pass.means)

    def before_training(self, global_step: int) -> None:
        if global_step == 0 and self.init_full_pass:
            self.refresh_with_full_pass()

    def after_step(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        if self.ema is not None:  # on the global batch, so that every process moves its means identically
            ema_update_means(self.vmf.means, self.gather(embeddings.detach().float()), self.gather(labels), self.ema)

    def end_epoch(self, epoch: int) -> dict:
        if self.miner is not None and self.miner.update_every is None:
            self.miner.update_means()  # every process calls it: the sums are all-reduced
        passes = self.full_pass_every is not None and (epoch + 1) % self.full_pass_every == 0
        if passes:
            self.refresh_with_full_pass()
        if self.miner is not None and not passes:
            record = self.miner.diagnostics()
        else:
            record = self.last_full_pass.summary() if self.last_full_pass is not None else {}
        record["vmf/full_pass"] = float(passes)
        record["vmf/kappa"] = self.vmf.kappa  # fixed, from the class count, adapted or learned: the value in use
        return record

    def set_means(self, means: torch.Tensor) -> None:
        shard = self.vmf.shard
        self.vmf.means.copy_(means if shard is None else means[shard.start : shard.stop])


def build_mean_schedule(
    c: RecipeConfig, loss: TrainingLoss, full_pass: Callable, gather: Callable[[torch.Tensor], torch.Tensor]
) -> MeanSchedule:
    """The schedule of ``c``'s loss: :class:`VMFMeanSchedule` for vMF, a no-op :class:`MeanSchedule` otherwise.
    ``full_pass(shard)`` computes the training set's means (of the shard's classes when the means are sharded)."""
    if not loss.is_vmf:
        return MeanSchedule()
    m = c.loss.means
    return VMFMeanSchedule(
        loss, lambda: full_pass(loss.loss.shard), gather,
        source=m.source, init_full_pass=m.init_full_pass, ema=m.ema, full_pass_every=m.full_pass_every,
    )  # fmt: skip

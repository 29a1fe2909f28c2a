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
from .config import RecipeConfig
from .losses import TrainingLoss

MEAN_UPDATES = ("miner", "full_pass")


def check_mean_settings(c: RecipeConfig) -> None:
    """Rejects mean-step settings that are unknown or contradict each other, before anything is loaded."""
    if c.loss.mean_update not in MEAN_UPDATES:
        raise ConfigError(f"loss.mean_update must be miner or full_pass, got {c.loss.mean_update!r}.")
    if c.loss.name == "vmf" and c.loss.mean_update == "full_pass" and not c.loss.init_full_pass:
        raise ConfigError(
            "loss.mean_update=full_pass trains without the miner, so with loss.init_full_pass=false the vMF means "
            "would be zero for the whole first epoch. Set loss.init_full_pass=true, or use loss.mean_update=miner."
        )
    every = c.loss.full_pass_every
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"loss.full_pass_every is a number of epochs, at least 1 (or null), got {every!r}.")
        # Like loss.mean_update and loss.params.vmf, it is vMF's part of a config that trains several losses
        # (emoji_pretrained.yaml): another loss ignores it.
        if c.loss.name == "vmf" and c.loss.mean_update != "miner":
            raise ConfigError(
                "loss.full_pass_every adds full passes to the miner's per-epoch means; loss.mean_update=full_pass "
                "already passes after every epoch. Set loss.mean_update=miner, or remove loss.full_pass_every."
            )
    if c.loss.name == "vmf" and not uses_miner_for_means(c) and c.loss.miner_params.get("vmf"):
        raise ConfigError(
            f"loss.miner_params.vmf ({c.loss.miner_params['vmf']}) sets GlobalMeanMiner's schedule, but "
            "loss.mean_update=full_pass sets vMF's means by full passes, without the miner. Remove it "
            "(loss.miner_params.vmf=null), or set loss.mean_update=miner."
        )
    if c.loss.mean_ema is not None and not 0.0 <= c.loss.mean_ema < 1.0:
        raise ConfigError(
            f"loss.mean_ema is the momentum kept on the old mean, in [0, 1) (e.g. 0.9), got {c.loss.mean_ema}."
        )
    if c.loss.mean_ema is not None and c.loss.name != "vmf":
        raise ConfigError(
            f"loss.mean_ema moves vMF's class means; {c.loss.name} has none. Remove it or set loss.name=vmf."
        )
    if c.loss.shard_means and c.loss.name != "vmf":
        raise ConfigError(
            f"loss.shard_means shards vMF's class means; {c.loss.name} has none. Remove it or set loss.name=vmf."
        )
    if c.loss.shard_means and c.loss.mean_ema is not None:
        raise ConfigError("loss.mean_ema does not work with loss.shard_means yet: remove one of them.")


def uses_miner_for_means(c: RecipeConfig) -> bool:
    """Whether the loss is built with its miner: vMF's full-pass schedule replaces the miner by the engine's pass."""
    return not (c.loss.name == "vmf" and c.loss.mean_update == "full_pass")


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
    """The vMF mean step: the paper's alternating algorithm, network step and mean step.

    * ``loss.init_full_pass``: the means of one full pass over the training set before the first step.
    * ``loss.mean_update=miner``: :class:`GlobalMeanMiner` publishes the means every ``update_every`` steps, or at
      the end of each epoch when ``update_every`` is None (the paper's once-per-epoch step, at no extra cost).
    * ``loss.mean_update=full_pass``: a full pass after every epoch instead (exact; costs a pass).
    * ``loss.full_pass_every=N`` with the miner: a full pass after every N-th epoch replaces the miner's means (the
      miner's sums of the epoch's own training embeddings in between, at no cost).
    * ``loss.mean_ema``: after every step, the batch's classes move towards its embeddings (CIDER's prototype EMA).

    Args:
        loss: the training loss (``VMFLoss`` and its miner, or no miner for ``full_pass``).
        full_pass: computes the class means of one pass over the training set (eval transforms), on every process.
        gather: gathers a tensor from every process (identity on one), so that every process moves its means alike.
        mean_update, init_full_pass, mean_ema, full_pass_every: the ``loss.*`` settings of the same names.
    """

    holds_means = True

    def __init__(
        self,
        loss: TrainingLoss,
        full_pass: Callable[[], ClassMeanEstimate],
        gather: Callable[[torch.Tensor], torch.Tensor],
        *,
        mean_update: str = "miner",
        init_full_pass: bool = True,
        mean_ema: Optional[float] = None,
        full_pass_every: Optional[int] = None,
    ) -> None:
        self.vmf = loss.loss
        self.miner: Optional[GlobalMeanMiner] = loss.miner
        self.full_pass, self.gather = full_pass, gather
        self.mean_update, self.init_full_pass, self.mean_ema = mean_update, init_full_pass, mean_ema
        self.full_pass_every = 1 if mean_update == "full_pass" else full_pass_every
        self.last_full_pass: Optional[ClassMeanEstimate] = None
        if mean_update == "full_pass":
            self.vmf.stale_means_warning_steps = None  # refreshed after every epoch, however long an epoch is

    def refresh_with_full_pass(self) -> None:
        """Sets the means from one pass over the training set (the paper's mean step)."""
        self.last_full_pass = self.full_pass()
        self.vmf.means.copy_(self.last_full_pass.means)

    def before_training(self, global_step: int) -> None:
        if global_step == 0 and self.init_full_pass:
            self.refresh_with_full_pass()

    def after_step(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        if self.mean_ema is not None:  # on the global batch, so that every process moves its means identically
            ema_update_means(
                self.vmf.means, self.gather(embeddings.detach().float()), self.gather(labels), self.mean_ema
            )

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
    return VMFMeanSchedule(
        loss, lambda: full_pass(loss.loss.shard), gather, mean_update=c.loss.mean_update, init_full_pass=c.loss.init_full_pass,
        mean_ema=c.loss.mean_ema, full_pass_every=c.loss.full_pass_every,
    )  # fmt: skip

"""Partial FC for vMF (An et al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW 2021):
the class means sharded across processes and the softmax over a sample of the negative classes, for heads of
millions of classes."""

from __future__ import annotations

import math
from typing import Optional

import torch

from .input_checks import check_label_range
from .kappa import KappaSetting
from .sharding import (
    ClassShard,
    check_equal_batches,
    gather,
    gather_with_grad,
    sharded_cross_entropy,
    sharded_nearest_mean,
)
from .vmf_loss import VMFLoss


class PartialFCVMFLoss(VMFLoss):
    """:class:`~pml_vmf.VMFLoss` for heads too large for one process or one softmax.

    With neither ``shard`` nor ``sample_rate`` below 1 it is ``VMFLoss`` exactly; each of them saves memory or
    arithmetic and changes nothing else a user does: ``GlobalMeanMiner``, ``compute_class_means`` and the recipes
    take it as they take ``VMFLoss`` (recipe keys: ``loss.means.shard=true``, ``loss.params.vmf.sample_rate``).

    Args:
        num_classes: number of training classes, all processes together.
        embedding_size: width of the embeddings.
        kappa: as ``VMFLoss``'s; ``"auto"`` counts every shard's classes.
        shard: hold only the means of this process's classes (:class:`~pml_vmf.sharding.ClassShard`): ``means`` is
            then ``(shard.size, embedding_size)``, the loss gathers the global batch's embeddings (every process
            needs the same batch size) and forms the softmax across processes. The losses and gradients equal the
            unsharded loss's. None: every process holds every mean.
        sample_rate: Partial FC's negative-class sampling: while the module is in training mode, each call computes
            logits against every class of the batch and a random subset of the others, ``ceil(sample_rate *
            classes)`` in all (per process with a shard), and the softmax over those; ``sampled_classes`` holds the
            last call's. 1.0 (the default): every class.
        **kwargs: ``VMFLoss``'s ``learn_kappa``, ``margin`` and PML's ``reducer``, ``distance``, ...

    Example:
        >>> shard = ClassShard.contiguous(num_classes)  # this process's range; torch.distributed initialised
        >>> loss_func = PartialFCVMFLoss(num_classes, embedding_size, shard=shard, sample_rate=0.1)
        >>> miner = GlobalMeanMiner(loss_func)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        kappa: KappaSetting = "auto",
        *,
        shard: Optional[ClassShard] = None,
        sample_rate: float = 1.0,
        **kwargs,
    ) -> None:
        if shard is not None and shard.num_classes != num_classes:
            raise ValueError(
                f"The shard is of {shard.num_classes} classes, the loss of {num_classes}: build both from one count."
            )
        if isinstance(sample_rate, bool) or not (isinstance(sample_rate, (int, float)) and 0.0 < sample_rate <= 1.0):
            raise ValueError(
                "PartialFCVMFLoss sample_rate is the share of classes in each softmax, in (0, 1] (Partial FC uses "
                f"0.1-0.3), got {sample_rate}."
            )
        self.shard = shard  # read by VMFLoss.__init__ to size the means
        super().__init__(num_classes, embedding_size, kappa, **kwargs)
        self.sample_rate = float(sample_rate)
        self.sampled_classes: Optional[torch.Tensor] = None  # global class ids of the last sampled softmax
        self.add_to_recordable_attributes(name="sample_rate", is_stat=False)

    def _mean_rows(self) -> int:
        return self.num_classes if self.shard is None else self.shard.size

    @property
    def _samples_classes(self) -> bool:
        return self.sample_rate < 1.0 and self.training

    def _per_sample_losses(
        self, embeddings: torch.Tensor, given: torch.Tensor, labels: torch.Tensor, rows: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        if self.shard is not None:
            check_label_range(labels, self.num_classes)
            self._watch_for_stale_means()
            return self._sharded_losses(embeddings, labels)
        if self._samples_classes:
            check_label_range(labels, self.num_classes)  # before the labels index anything
            rows = sample_classes(labels.to(self.means.device), self.num_classes, self.sample_rate)
            self.sampled_classes = rows
        return super()._per_sample_losses(embeddings, given, labels, rows)

    def _sharded_losses(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """This process's per-sample losses: the logits of the gathered global batch against this process's means
        (their gradients flow back to each sample's process), and the softmax across processes."""
        batch = embeddings.shape[0]
        check_equal_batches(batch, embeddings.device)
        labels = gather(labels)
        local = labels - self.shard.start
        owned = (local >= 0) & (local < self.shard.size)
        rows, columns = None, torch.where(owned, local, -1)
        if self._samples_classes:
            rows = sample_classes(local[owned].to(self.means.device), self.shard.size, self.sample_rate)
            self.sampled_classes = rows + self.shard.start
            columns = torch.where(owned, torch.searchsorted(rows, local.to(rows.device)).to(local.device), -1)
        logits, mean_norms = self._logits_and_mean_norms(gather_with_grad(embeddings), rows)
        kappa = self._kappa_for(logits.dtype, logits.device)
        losses = sharded_cross_entropy(logits, mean_norms > 0, columns, kappa, self.margin)
        return losses[self.shard.rank * batch : (self.shard.rank + 1) * batch]

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The nearest mean direction over every process's classes (with a shard, every process must call it, with
        the same number of embeddings)."""
        if self.shard is None:
            return super().predict(embeddings)
        return sharded_nearest_mean(embeddings, self._means_on(embeddings.device), self.shard)


def sample_classes(batch_rows: torch.Tensor, num_rows: int, sample_rate: float) -> torch.Tensor:
    """Partial FC's class sampling (insightface ``partial_fc_v2.py``): the rows of a process's means to compute
    logits against, every class of the batch and a uniformly random subset of the others, ``ceil(sample_rate *
    num_rows)`` in all (more when the batch holds more classes), sorted. Draws from torch's global generator.

    Args:
        batch_rows: ``(n,)`` rows of the batch's classes among this process's (its own samples, or the owned part
            of the global batch).
        num_rows: this process's classes.
        sample_rate: the share of them to sample, in ``(0, 1]``.
    """
    count = min(num_rows, math.ceil(sample_rate * num_rows))
    scores = torch.rand(num_rows, device=batch_rows.device)
    scores[batch_rows] = 2.0  # above every random score: the batch's classes are always in
    count = max(count, int((scores == 2.0).sum()))
    return scores.topk(count).indices.sort().values

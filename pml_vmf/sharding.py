"""Class means sharded across processes: each process owns a contiguous range of classes (Partial FC's layout).

vMF means carry no gradient and no optimizer state, so a process holds only its range's means and its miner only
that range's sums; the loss gathers the global batch's embeddings (with their gradient) and forms the softmax from
all-reduced maxima, sums of exponentials and target logits. Per process, the class state is ``1 / W`` of the whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ClassShard:
    """The classes ``[start, stop)`` of ``num_classes`` that process ``rank`` of ``world_size`` owns.

    Build one with :meth:`contiguous`; pass it as ``PartialFCVMFLoss(..., shard=...)``.
    """

    start: int
    stop: int
    num_classes: int
    rank: int
    world_size: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @classmethod
    def contiguous(
        cls,
        num_classes: int,
        sizes: Optional[Sequence[int]] = None,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> ClassShard:
        """This process's range when the classes are dealt out in contiguous ranges, in rank order.

        Args:
            num_classes: all classes.
            sizes: classes per process (uneven allowed, each at least 1); default: as even as possible, the first
                ``num_classes % world_size`` processes holding one more.
            rank, world_size: default: ``torch.distributed``'s (which must then be initialised).

        Raises:
            ValueError: when the sizes do not add up to ``num_classes`` or do not match the world size.
        """
        if rank is None or world_size is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(
                    "ClassShard.contiguous needs rank and world_size, or an initialised torch.distributed."
                )
            rank, world_size = dist.get_rank(), dist.get_world_size()
        if sizes is None:
            base, extra = divmod(num_classes, world_size)
            sizes = [base + (r < extra) for r in range(world_size)]
        sizes = [int(s) for s in sizes]
        if len(sizes) != world_size or sum(sizes) != num_classes or min(sizes) < 1:
            raise ValueError(
                f"Shard sizes {sizes} must be {world_size} positive counts (one per process) adding up to num_classes "
                f"{num_classes}; with fewer classes than processes, do not shard."
            )
        start = sum(sizes[:rank])
        return cls(start, start + sizes[rank], num_classes, rank, world_size)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each process the summed gradient of its own rows (a reduce-scatter, done as
    an all-reduce so that gloo, which has no reduce-scatter, runs it too)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        return gather(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


class _SumWithGrad(torch.autograd.Function):
    """All-reduce sum whose backward is the all-reduce sum of the gradients: every process's loss uses the sum."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (equal shapes), concatenated in rank order; gradients flow back to their owners."""
    return _GatherWithGrad.apply(tensor)


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (equal shapes), concatenated in rank order, without gradient."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def sum_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over processes, differentiable (its gradient is the sum of every process's gradient)."""
    return _SumWithGrad.apply(tensor)


def check_equal_batches(batch_size: int, device: torch.device) -> None:
    """Sharded losses gather the global batch, which needs the same batch size on every process."""
    sizes = gather(torch.tensor([batch_size], device=device))
    if sizes.min() != sizes.max():
        raise ValueError(
            f"Sharded means need the same batch size on every process, got {sizes.tolist()}: use a sampler that "
            "deals equal batches (MPerClassBatchSampler, or DistributedSampler with drop_last)."
        )


def sharded_cross_entropy(
    logits: torch.Tensor, has_mean: torch.Tensor, columns: torch.Tensor, kappa, margin: float
) -> torch.Tensor:
    """``-log softmax(logits)[y]`` of every sample of the global batch, each process holding the logits of its own
    classes only: the log-softmax comes from the all-reduced row maxima, sums of exponentials and target logits (the
    target from the process that owns the class), each differentiable where it carries a gradient.

    Args:
        logits: ``(global batch, columns)``, ``kappa * cos`` against this process's means (all, or those sampled),
            ``-inf`` for classes with no mean (``VMFLoss.get_logits`` of the gathered embeddings).
        has_mean: ``(columns,)``, whether each column's class has a mean.
        columns: ``(global batch,)`` the column of each sample's class, -1 where another process owns it.
        kappa: the concentration (a float, or a tensor when learned), for the margin.
        margin: the cosine margin subtracted from the target's cosine.

    Returns:
        ``(global batch,)`` losses, the same on every process.

    Raises:
        ValueError: when a sample's class has no mean yet (on every process alike).
    """
    owned = columns >= 0
    local = columns.clamp_min(0)
    missing = _count_on_all_processes(owned & ~has_mean[local])
    if missing:
        raise ValueError(
            f"VMFLoss has no mean direction yet for {missing} sample(s) of the global batch: pass every batch through "
            "GlobalMeanMiner first (it seeds missing means), or initialise the means with compute_class_means."
        )
    if margin:  # kappa * (cos_y - m) on the target, where this process owns it
        is_target = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, local[:, None], True) & owned[:, None]
        logits = logits - is_target.to(logits.dtype) * (kappa * margin)
    target = sum_with_grad(torch.where(owned, logits.gather(1, local[:, None])[:, 0], 0.0))
    row_max = logits.detach().max(dim=1).values
    dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
    sum_exp = sum_with_grad(torch.exp(logits - row_max[:, None]).sum(dim=1))
    return torch.log(sum_exp) + row_max - target


def _count_on_all_processes(mask: torch.Tensor) -> int:
    count = mask.sum()
    dist.all_reduce(count)
    return int(count.item())


@torch.no_grad()
def sharded_nearest_mean(embeddings: torch.Tensor, means: torch.Tensor, shard: ClassShard) -> torch.Tensor:
    """The global class id of the nearest mean direction of each embedding, each process holding its shard's means
    (rows of zeros: no mean, never predicted). Every process calls it with the same number of embeddings."""
    units = torch.nn.functional.normalize(embeddings.float(), dim=1)
    has_mean = means.ne(0).any(dim=1)
    cosines = (units @ torch.nn.functional.normalize(means.float(), dim=1).T).masked_fill(~has_mean, -torch.inf)
    best, index = cosines.max(dim=1)
    bests, indices = gather(best[None]), gather((index + shard.start)[None])  # (world_size, N)
    return indices.gather(0, bests.argmax(dim=0)[None])[0]


@torch.no_grad()
def gather_shards(means: torch.Tensor, shard: ClassShard) -> torch.Tensor:
    """Every process's shard of the means, in class order: ``(num_classes, d)`` on every process (ranges may be
    uneven: shards are padded to the largest for the gather)."""
    sizes = gather(torch.tensor([shard.size], device=means.device)).tolist()
    padded = torch.zeros(max(sizes), means.shape[1], dtype=means.dtype, device=means.device)
    padded[: shard.size] = means
    parts = gather(padded[None])  # (world_size, largest, d)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])

"""Maximum-likelihood vMF class means and concentrations, from running sums or from a full pass over a dataset."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum_, distributed_sampler_padding
from .input_checks import check_batch, check_label_range, drop_non_finite_rows
from .pml_api import is_distributed

if TYPE_CHECKING:
    from .sharding import ClassShard


@dataclass
class ClassMeanEstimate:
    """Per-class vMF estimates from a set of unit embeddings.

    Attributes:
        means: ``(num_classes, embedding_size)`` unit mean directions; a row of zeros for a class with no samples.
        counts: ``(num_classes,)`` number of samples of each class.
        resultant_lengths: ``(num_classes,)`` mean resultant length ``R = ||sum z|| / n`` in ``[0, 1]``; NaN where
            ``n = 0``. Near 1 means a compact class.
        concentrations: ``(num_classes,)`` Banerjee et al.'s approximation of each class's own kappa; NaN where
            ``n = 0``, inf where all samples coincide.
    """

    means: torch.Tensor
    counts: torch.Tensor
    resultant_lengths: torch.Tensor
    concentrations: torch.Tensor

    def summary(self, prefix: str = "vmf/") -> "dict[str, float]":
        """Mean, min and max over classes of the resultant lengths and concentrations, for logging; classes with no
        sample, or whose samples coincide (infinite concentration), are left out."""
        summary = {}
        for name, values in (("resultant_length", self.resultant_lengths), ("concentration", self.concentrations)):
            finite = values[torch.isfinite(values)].double()
            if finite.numel():
                summary.update(
                    {f"{prefix}{name}_{stat}": getattr(finite, stat)().item() for stat in ("mean", "min", "max")}
                )
        return summary


def estimate_concentration(resultant_length: torch.Tensor, dim: int) -> torch.Tensor:
    """Approximates the vMF concentration from the mean resultant length (Banerjee et al., JMLR 2005).

    ``kappa_hat = R (p - R^2) / (1 - R^2)``, computed in float64. Useful as a diagnostic of how compact each class is.

    Args:
        resultant_length: mean resultant lengths in ``[0, 1]``.
        dim: the dimension ``p`` of the sphere's ambient space (the embedding width).

    Returns:
        The estimates, float64, inf where ``R == 1``.
    """
    r = resultant_length.double().clamp(0.0, 1.0)
    return r * (dim - r**2) / (1.0 - r**2)


def estimate_class_means(sums: torch.Tensor, counts: torch.Tensor) -> ClassMeanEstimate:
    """Turns per-class sums of unit embeddings and sample counts into means and statistics.

    Args:
        sums: ``(num_classes, embedding_size)`` sums of L2-normalised embeddings.
        counts: ``(num_classes,)`` sample counts.
    """
    norms = sums.double().norm(dim=1)
    counts_f = counts.double()
    resultant_lengths = torch.where(counts > 0, norms / counts_f.clamp_min(1), torch.nan)
    return ClassMeanEstimate(
        means=F.normalize(sums.float(), dim=1),
        counts=counts.clone(),
        resultant_lengths=resultant_lengths,
        concentrations=estimate_concentration(resultant_lengths, sums.shape[1]),
    )


@torch.no_grad()
def ema_update_means(
    means: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, momentum: float
) -> torch.Tensor:
    """Moves the mean direction of each class in the batch towards the batch's embeddings of that class, in place.

    ``mu_c <- normalize(momentum * mu_c / |mu_c| + (1 - momentum) * mean_i z_i)`` over the batch's L2-normalised
    embeddings ``z_i`` of class ``c``: CIDER's prototype update (Ming et al., ICLR 2023), averaged over the batch. It
    lets the means follow the network between full passes. Classes absent from the batch, or with no mean yet (a row
    of zeros), are left unchanged.

    Args:
        means: ``(num_classes, embedding_size)`` the vMF means buffer, updated in place.
        embeddings: ``(N, embedding_size)``, need not be normalised; pass the global batch under several processes so
            that every process makes the same update.
        labels: ``(N,)`` integer class indices.
        momentum: the weight kept on the old mean, in ``[0, 1)``.

    Returns:
        ``means``.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"The EMA momentum must be in [0, 1), got {momentum}.")
    labels = labels.to(means.device).long()
    unit = F.normalize(embeddings.detach().to(means.device, torch.float32), dim=1)
    sums = torch.zeros_like(means).index_add_(0, labels, unit)
    counts = torch.bincount(labels, minlength=means.shape[0]).to(means.dtype)
    update = (counts > 0) & means.ne(0).any(dim=1)
    moved = F.normalize(
        momentum * F.normalize(means, dim=1) + (1 - momentum) * sums / counts.clamp_min(1)[:, None], dim=1
    )
    means.copy_(torch.where(update[:, None], moved, means))
    return means


@torch.no_grad()
def predict_nearest_mean(embeddings: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Classifies by the nearest mean direction, ``argmax_c cos(z, mu_c)``: vMF's rule, and that of any cosine
    classifier (the normalised columns of NormalizedSoftmax's or ArcFace's ``W``).

    Args:
        embeddings: ``(N, embedding_size)``; need not be normalised.
        means: ``(num_classes, embedding_size)`` directions; need not be normalised. A row of zeros is a class with
            no mean yet, never predicted.

    Returns:
        ``(N,)`` int64 class indices, on the device of ``embeddings``.

    Raises:
        ValueError: when no class has a mean.
    """
    means = means.to(embeddings.device).float()
    has_mean = means.ne(0).any(dim=1)
    if not has_mean.any():
        raise ValueError(
            "Nearest-mean prediction: no class has a mean yet (every row of the means is zero). Estimate them with "
            "compute_class_means(...) or by training with GlobalMeanMiner."
        )
    scores = F.normalize(embeddings.float(), dim=1) @ F.normalize(means, dim=1).T
    return scores.masked_fill(~has_mean, -torch.inf).argmax(dim=1)


@torch.no_grad()
def compute_class_means(
    model: torch.nn.Module,
    dataloader: Iterable,
    num_classes: int,
    *,
    device: Optional[torch.device] = None,
    gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    shard: Optional["ClassShard"] = None,
) -> ClassMeanEstimate:
    """The paper's exact mean step: one pass over a (training) set in eval mode.

    Use it to initialise ``VMFLoss.means`` from a (pretrained) network before the first step, or as the per-epoch
    update: ``loss_func.means.copy_(compute_class_means(model, loader, num_classes).means)``. The model's train/eval
    mode is restored afterwards. Run it inside ``torch.autocast`` to embed in mixed precision; sums are float32.

    Every sample is counted exactly once under multiple processes:

    * with ``gather`` (``accelerator.gather_for_metrics`` for an accelerate-prepared loader), every process sums the
      gathered global batch, from which accelerate has dropped the samples it repeated to even out the last batch;
    * without it, ``dataloader`` must draw from a ``torch.utils.data.DistributedSampler``: the duplicates it pads with
      are left out and the sums are all-reduced.

    Args:
        model: maps a batch of inputs to embeddings ``(batch_size, embedding_size)``.
        dataloader: yields ``(inputs, labels, ...)`` with labels in ``[0, num_classes)``.
        num_classes: number of classes.
        device: where to run the model; defaults to the device of its first parameter.
        gather: gathers a per-process tensor into the global one, every sample once.
        shard: the classes this process owns (``PartialFCVMFLoss(shard=...)``): it sums only their samples of the gathered
            batches and returns only their means, ``(shard.size, embedding_size)``. Needs ``gather``.

    Returns:
        The means (zeros for classes with no sample) and per-class statistics, identical on every process (with a
        shard: those of its classes).

    Raises:
        ValueError: under ``torch.distributed`` when neither ``gather`` nor a ``DistributedSampler`` says how the
            data is split, or for labels outside ``[0, num_classes)``.
    """
    padding = None
    if shard is not None and gather is None:
        raise ValueError(
            "compute_class_means with a shard sums the gathered global batches: pass gather=accelerator.gather_for_metrics."
        )
    if is_distributed() and gather is None:
        padding = distributed_sampler_padding(dataloader)
        if padding is None:
            raise ValueError(
                "compute_class_means under torch.distributed cannot tell which process holds which sample: pass "
                "gather=accelerator.gather_for_metrics with an accelerate-prepared dataloader, or draw the "
                "dataloader from a torch.utils.data.DistributedSampler."
            )
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    sums: Optional[torch.Tensor] = None
    rows = num_classes if shard is None else shard.size
    counts = torch.zeros(rows, dtype=torch.long, device=device)
    num_local_seen = 0
    try:
        for batch in dataloader:
            inputs, labels = batch[0].to(device), batch[1].to(device)
            embeddings = model(inputs).float()
            if gather is not None:
                embeddings, labels = gather(embeddings), gather(labels)
            elif padding is not None:
                dataset_size, world_size, rank = padding
                positions = torch.arange(num_local_seen, num_local_seen + len(labels), device=device)
                num_local_seen += len(labels)
                keep = positions * world_size + rank < dataset_size
                embeddings, labels = embeddings[keep], labels[keep]
            if sums is None:
                sums = torch.zeros(rows, embeddings.shape[1], device=device)
            labels = check_batch(embeddings, labels, num_classes, sums.shape[1])
            finite = torch.isfinite(embeddings).all(dim=1)
            (num_non_finite,) = check_label_range(labels, num_classes, (~finite).sum())
            embeddings, labels, _ = drop_non_finite_rows(
                embeddings, labels, finite, num_non_finite, "compute_class_means"
            )
            if shard is not None:  # the owner's classes of the global batch
                owned = (labels >= shard.start) & (labels < shard.stop)
                embeddings, labels = embeddings[owned], labels[owned] - shard.start
            sums.index_add_(0, labels, F.normalize(embeddings, dim=1))
            counts += torch.bincount(labels, minlength=rows)
    finally:
        model.train(was_training)
    if sums is None:
        raise ValueError("compute_class_means got an empty dataloader: it needs at least one batch.")
    if padding is not None:
        all_reduce_sum_(sums, counts)
    return estimate_class_means(sums, counts)

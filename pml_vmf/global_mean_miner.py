"""GlobalMeanMiner: a PML miner that accumulates class sums from training batches and publishes vMF means."""

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .class_means import ClassMeanEstimate, estimate_class_means
from .distributed import all_reduce_sum_
from .input_checks import check_batch, check_label_range, drop_non_finite_rows
from .pml_api import BaseMiner, c_f, is_distributed
from .sharding import check_equal_batches, gather
from .vmf_loss import VMFLoss


class GlobalMeanMiner(BaseMiner):
    """Keeps the class means of a :class:`VMFLoss` current from the embeddings training already computes.

    Called like any PML miner, ``miner(embeddings, labels)``. Each call adds the detached, L2-normalised embeddings
    to per-class float32 sums and counts and returns a pair tuple ``(a1, p, a2, n)`` with every finite sample once as
    a self-positive and no negatives, which makes ``VMFLoss`` weigh those samples equally. :meth:`update_means`
    publishes ``normalize(sums)`` into ``loss.means`` (the paper's alternating mean step); by default every 50 calls
    (``update_every``), and whenever you call it, for example at the end of an epoch.

    Before a class has a mean (a zero row, e.g. at the start of training), a call that sees it writes the normalised
    sum of its samples in that batch into ``loss.means`` at once (``seed_missing_means``), so the loss can be computed
    on the same batch. Means that are already there are never overwritten except by :meth:`update_means`.

    Under ``torch.distributed`` every process must call the miner the same number of times (as in DDP training):
    seeding and updates all-reduce, so ``loss.means`` stays identical on every process. It needs no
    ``DistributedMinerWrapper``; wrapped in one (with the loss in ``DistributedLossWrapper``), it sees the gathered
    global batch on every process and counts it once.

    Args:
        loss: the ``VMFLoss`` whose ``means`` this miner writes. It is not registered as a submodule: the means live
            in the loss's ``state_dict`` only, and the miner's ``state_dict`` holds its sums, counts and call count
            (as extra state).
        update_every: publish the means every this many calls; ``None`` to publish only when
            :meth:`update_means` is called. The default of 50 comes from ``benchmarks/update_schedule.py``: on
            class-disjoint Fashion-MNIST, means published once per epoch lagged the network (MAP@R 0.242 against
            0.300, mean of 3 seeds); see BENCHMARKS.md. With few images per class (each class in one batch per
            epoch, as in SOP), every class's mean comes from a different network state whatever the schedule; there
            exact means from :func:`compute_class_means` after each epoch trained far better on the emoji benchmark.
        momentum: ``m`` in ``mu <- normalize(m * mu_old + (1 - m) * mu_new)``; 0 replaces the means.
        seed_missing_means: seed the means of classes that have none from the batch they first appear in.
        **kwargs: PML ``BaseMiner`` arguments.
    """

    def __init__(
        self,
        loss: VMFLoss,
        update_every: Optional[int] = 50,
        momentum: float = 0.0,
        seed_missing_means: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(loss, VMFLoss):
            raise ValueError(f"GlobalMeanMiner needs the VMFLoss whose means it updates, got {type(loss).__name__}.")
        if update_every is not None and (
            isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1
        ):
            raise ValueError(f"update_every must be a positive integer or None, got {update_every!r}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}.")
        # Bypass nn.Module registration (see Args): moving or saving the miner must not move or save the loss.
        object.__setattr__(self, "loss", loss)
        loss.expect_mean_updates_every(update_every)
        self.update_every = update_every
        self.momentum = float(momentum)
        self.seed_missing_means = seed_missing_means
        rows = loss.means.shape[0]  # every class, or the loss's shard of them
        self.register_buffer("class_sums", torch.zeros(rows, loss.embedding_size, dtype=torch.float32))
        self.register_buffer("class_counts", torch.zeros(rows, dtype=torch.long))
        self.calls_since_update = 0  # a Python int, saved through get_extra_state: no device sync per call
        self.last_estimate: Optional[ClassMeanEstimate] = None  # of the last update_means(), for diagnostics
        self._restored_diagnostics: dict = {}  # the last update's diagnostics, as a checkpoint restored them
        self.add_to_recordable_attributes(list_of_names=["update_every", "momentum"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["num_skipped_non_finite"], is_stat=True)

    def mine(
        self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor
    ) -> tuple:
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        num_classes = self.loss.num_classes
        labels = check_batch(embeddings, labels, num_classes, self.loss.embedding_size)
        self._to_device(embeddings.device)
        if self.loss.shard is not None:
            return self._mine_for_shard(embeddings, labels)
        finite = torch.isfinite(embeddings).all(dim=1)
        sample_has_no_mean = self.loss.means[labels.clamp(0, num_classes - 1)].eq(0).all(dim=1) & finite
        num_non_finite, num_without_mean = check_label_range(
            labels, num_classes, (~finite).sum(), sample_has_no_mean.sum()
        )
        self.num_skipped_non_finite = num_non_finite
        embeddings, labels, kept = drop_non_finite_rows(embeddings, labels, finite, num_non_finite, "GlobalMeanMiner")
        units = F.normalize(embeddings.float(), dim=1)
        if not (is_distributed() and _same_batch_on_every_process(units) and dist.get_rank() != 0):
            # Every process adds its own samples, except when PML's DistributedMinerWrapper handed each the same
            # gathered batch: then only the first adds it, so the all-reduced counts are not the world size times.
            self.class_sums.index_add_(0, labels, units.detach())
            self.class_counts.index_add_(0, labels, torch.ones_like(labels))
        if self.seed_missing_means and (num_without_mean or is_distributed()):
            self._seed_missing_means(units, labels, sample_has_no_mean[kept])
        self.calls_since_update += 1
        if self.update_every is not None and self.calls_since_update >= self.update_every:
            self.update_means()
        empty = kept[:0]
        return kept, kept, empty, empty

    def _mine_for_shard(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple:
        """Owner-side accumulation: every process gathers the global batch and adds the samples of its own classes,
        so its sums are complete and no sums cross processes at the update."""
        shard = self.loss.shard
        check_equal_batches(len(labels), embeddings.device)
        finite = torch.isfinite(embeddings).all(dim=1)
        (num_non_finite,) = check_label_range(labels, self.loss.num_classes, (~finite).sum())
        self.num_skipped_non_finite = num_non_finite
        _, _, kept = drop_non_finite_rows(embeddings, labels, finite, num_non_finite, "GlobalMeanMiner")
        units = gather(F.normalize(embeddings.detach().float(), dim=1))
        all_labels, all_finite = gather(torch.stack([labels, finite.long()], dim=1)).unbind(dim=1)  # one collective
        local = all_labels - shard.start
        mine = all_finite.bool() & (local >= 0) & (local < shard.size)
        units, local = units[mine], local[mine]
        self.class_sums.index_add_(0, local, units)
        self.class_counts.index_add_(0, local, torch.ones_like(local))
        if self.seed_missing_means:
            self._seed_missing_means(units, local, self.loss.means[local].eq(0).all(dim=1), across_processes=False)
        self.calls_since_update += 1
        if self.update_every is not None and self.calls_since_update >= self.update_every:
            self.update_means()
        empty = kept[:0]
        return kept, kept, empty, empty

    @torch.no_grad()
    def update_means(self) -> ClassMeanEstimate:
        """Publishes the means of the samples seen since the last update into ``loss.means``, then resets the sums.

        All-reduces sums and counts first when ``torch.distributed`` is initialised (every process must call it).
        Classes with no sample since the last update keep their previous mean.

        Returns:
            The estimate from the accumulated samples: counts, mean resultant lengths and concentrations per class
            (``means`` holds the published means).
        """
        self._to_device(self.loss.means.device)
        if self.loss.shard is None:  # a shard's owner already holds its classes' complete sums
            all_reduce_sum_(self.class_sums, self.class_counts)
        estimate = estimate_class_means(self.class_sums, self.class_counts)
        old_means = self.loss.means
        new_means = estimate.means
        if self.momentum > 0:
            blended = F.normalize(self.momentum * old_means + (1 - self.momentum) * new_means, dim=1)
            # Classes with no mean yet, or whose blend cancels out, take the new mean as it is.
            use_blend = blended.ne(0).any(dim=1) & old_means.ne(0).any(dim=1)
            new_means = torch.where(use_blend[:, None], blended, new_means)
        has_samples = (self.class_counts > 0)[:, None]
        old_means.copy_(torch.where(has_samples, new_means, old_means))
        estimate.means = old_means.clone()
        self.last_estimate = estimate
        self.class_sums.zero_()
        self.class_counts.zero_()
        self.calls_since_update = 0
        return estimate

    @staticmethod
    def combine_process_states(states: list, is_first: bool) -> dict:
        """One process's state from the ``state_dict`` of every process of a run with another number of processes:
        the first process takes the sums and counts of all of them and the others none, so that the next all-reduce
        in :meth:`update_means` gives the same totals."""
        combined = dict(states[0])
        for key in ("class_sums", "class_counts"):
            total = sum(state[key] for state in states)
            combined[key] = total if is_first else torch.zeros_like(total)
        return combined

    def diagnostics(self) -> "dict[str, float]":
        """:meth:`ClassMeanEstimate.summary` of the last mean update (``vmf/resultant_length_mean`` ...), also after
        a resume from a checkpoint written since that update; ``{}`` before the first update."""
        return self.last_estimate.summary() if self.last_estimate is not None else dict(self._restored_diagnostics)

    def get_extra_state(self) -> dict:
        return {"calls_since_update": self.calls_since_update, "diagnostics": self.diagnostics()}

    def set_extra_state(self, state: dict) -> None:
        self.calls_since_update = int(state["calls_since_update"])
        self.last_estimate = None
        self._restored_diagnostics = dict(state.get("diagnostics", {}))

    def _seed_missing_means(
        self, units: torch.Tensor, labels: torch.Tensor, sample_has_no_mean: torch.Tensor, across_processes: bool = True
    ) -> None:
        """Seeds the means of the classes of ``sample_has_no_mean`` from ``units``; ``across_processes``: the batch is
        this process's share of the global batch (else it is the global batch itself, as a shard's owner sees it)."""
        means = self.loss.means
        across_processes = across_processes and is_distributed()
        if across_processes:
            # The means are identical on every process, so the classes missing anywhere form one global set; reduce
            # it first, so that every process agrees on whether, and how much, to reduce next.
            missing = torch.zeros(self.loss.num_classes, dtype=torch.long, device=means.device)
            missing[labels[sample_has_no_mean]] = 1
            all_reduce_sum_(missing)
            missing_classes = missing.nonzero().squeeze(1)
        else:
            missing_classes = labels[sample_has_no_mean].unique()
        if missing_classes.numel() == 0:
            return
        slot = torch.full((means.shape[0],), -1, dtype=torch.long, device=means.device)
        slot[missing_classes] = torch.arange(missing_classes.numel(), device=means.device)
        sample_slots = slot[labels]
        selected = sample_slots >= 0
        seed_sums = torch.zeros(missing_classes.numel(), means.shape[1], device=means.device)
        seed_sums.index_add_(0, sample_slots[selected], units[selected])
        if across_processes:
            all_reduce_sum_(seed_sums)
        means[missing_classes] = F.normalize(seed_sums, dim=1)

    def _apply(self, fn, recurse: bool = True):
        # The running sums stay float32 under .half() / .to(dtype), like the loss's means; devices still move.
        super()._apply(fn, recurse)
        if self.class_sums.dtype != torch.float32:
            self.class_sums = self.class_sums.float()
        return self

    def _to_device(self, device: torch.device) -> None:
        self.loss._means_on(device)
        if self.class_sums.device != device:
            self.class_sums = self.class_sums.to(device)
            self.class_counts = self.class_counts.to(device)


def _same_batch_on_every_process(units: torch.Tensor) -> bool:
    """Whether every process holds the same batch (PML's ``DistributedMinerWrapper`` gathers the global batch onto
    each): one all-reduce of its size and checksum."""
    checksum = units.detach().double().sum() if units.numel() else units.new_zeros((), dtype=torch.float64)
    stats = torch.stack([torch.tensor(float(units.shape[0]), dtype=torch.float64, device=units.device), checksum])
    bounds = torch.cat([stats, -stats])
    dist.all_reduce(bounds, op=dist.ReduceOp.MAX)
    return bool((bounds[:2] == -bounds[2:]).all())

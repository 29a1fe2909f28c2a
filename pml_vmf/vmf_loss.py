"""VMFLoss: cross-entropy of a von Mises-Fisher mixture whose class means are estimated, not learned."""

import math
import warnings
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from .class_means import predict_nearest_mean
from .input_checks import check_batch, check_cosine_distance, check_label_range, check_num_classes_and_size
from .kappa import KappaSetting, class_count_kappa, parse_kappa
from .pml_api import BaseMetricLossFunction, CosineSimilarity, c_f, lmu

if TYPE_CHECKING:
    from .sharding import ClassShard


class VMFLoss(BaseMetricLossFunction):
    """von Mises-Fisher loss of Zhe, Chen & Yan, "Directional Statistics-based Deep Metric Learning for Image
    Classification and Retrieval" (Pattern Recognition 93, 2019; arXiv 1802.09662).

    Each class ``c`` is a ``vMF(mu_c, kappa)`` on the unit sphere with one shared concentration, so the normaliser
    cancels and the per-sample loss is ``-log softmax_c(kappa * cos(z, mu_c))[y]``. The means ``mu_c`` are a buffer,
    not parameters: they receive no gradient and are estimated from the training set by :class:`GlobalMeanMiner`
    (running sums) or :func:`compute_class_means` (a full pass), or written by the user (``loss.means.copy_(...)``).

    A row of zeros in ``means`` means "no mean yet": that class is left out of the softmax (logit ``-inf``), and a
    batch that holds a sample of such a class is an error. ``GlobalMeanMiner`` seeds the mean of every class from the
    first batch it appears in, before the loss sees that batch, so the drop-in loop trains from scratch.

    Logits and the log-softmax are computed in float32 even under fp16/bf16 autocast (float64 for float64
    embeddings); the buffers stay float32 whatever the module is cast to (``loss.half()`` moves them, never casts).

    The kappa in use is in the ``state_dict`` (``kappa_value``, or ``log_kappa`` when learned), so a checkpoint
    restores the value a run trained with.

    The loss warns once when it has run :attr:`STALE_MEANS_WARNING_STEPS` calls in a row with means that did not
    change: the sign of a training loop that lost its ``GlobalMeanMiner`` (or kept its old miner).
    :meth:`expect_mean_updates_every` is the one way to change that (None silences it).

    For heads of millions of classes, :class:`~pml_vmf.partial_fc.PartialFCVMFLoss` shards the means across
    processes and samples negative classes; it is this loss otherwise.

    Args:
        num_classes: number of training classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings.
        kappa: the shared concentration, i.e. the inverse softmax temperature (``NormalizedSoftmaxLoss``'s
            ``temperature = 1 / kappa``). ``"auto"`` (the default) sets it from the class count, AdaCos's fixed
            scale ``sqrt(2) * ln(num_classes - 1)``, at least 2 (:func:`~pml_vmf.kappa.class_count_kappa`: 3.1 for
            10 classes, 8.8 for 500); on validation it was level with the best tuned kappa on every set measured
            (BENCHMARKS.md, "At the defaults"). A number fixes it.
        learn_kappa: make kappa a trainable scalar (stored as ``log_kappa``, so it stays positive), learned with the
            embedding by backprop, the learned temperature of Scott, Gallagher & Mozer (ICCV 2021); ``kappa`` is its
            starting value (a number or ``"auto"``). Give it its own learning rate and no weight decay (the recipe's
            ``optim.loss_lr``).
        margin: an additive cosine margin on the target logit while training, ``kappa * (cos_y - margin)`` (CosFace,
            Wang et al. 2018, here with data-estimated means). Predictions and :meth:`get_logits` have no margin.
            The default 0.1 was level with or above 0 (the paper's loss) on every validation set measured at the
            default kappa, and ahead on emoji (BENCHMARKS.md); ``margin=0`` is the paper's loss exactly.
        **kwargs: PML's ``reducer``, ``distance`` (must be a cosine similarity), ``embedding_regularizer``, ...

    Example:
        >>> loss_func = VMFLoss(num_classes=100, embedding_size=128)
        >>> miner = GlobalMeanMiner(loss_func)
        >>> loss = loss_func(embeddings, labels, miner(embeddings, labels))
    """

    STALE_MEANS_WARNING_STEPS = 1000
    """Calls in a row with unchanged means after which the loss warns, until :meth:`expect_mean_updates_every`
    says otherwise."""

    shard: "Optional[ClassShard]" = None
    """The classes whose means this process holds, None: every class (only
    :class:`~pml_vmf.partial_fc.PartialFCVMFLoss` shards them)."""

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        kappa: KappaSetting = "auto",
        *,
        learn_kappa: bool = False,
        margin: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_num_classes_and_size(num_classes, embedding_size)
        check_cosine_distance(self.distance)
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        value = parse_kappa(kappa)
        if value is None:
            value = class_count_kappa(num_classes)  # the global count, also when the means are sharded
        self.log_kappa = torch.nn.Parameter(torch.tensor(0.0)) if learn_kappa else None
        # The kappa in use, saved with the means; a fixed kappa is also kept as a Python float (no device read).
        self.register_buffer("kappa_value", None if learn_kappa else torch.tensor(0.0))
        self.kappa = value
        if not (math.isfinite(margin) and 0.0 <= margin < 1.0):
            raise ValueError(
                f"VMFLoss margin must be in [0, 1) (a cosine margin, CosFace's 0.35 for scale), got {margin}."
            )
        self.margin = float(margin)
        self.register_buffer("means", torch.zeros(self._mean_rows(), embedding_size, dtype=torch.float32))
        self.stale_means_warning_steps: Optional[int] = self.STALE_MEANS_WARNING_STEPS
        self._means_seen = None  # (tensor id, in-place version) of the means at the last call
        self._calls_with_same_means = 0
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "embedding_size", "kappa", "margin"], is_stat=False
        )

    def _mean_rows(self) -> int:
        return self.num_classes

    def expect_mean_updates_every(self, steps: Optional[int]) -> None:
        """Says how often the means will change, so that the stale-means warning fires only when they do not: every
        ``steps`` calls at most (it then waits 20 times that, at least ``stale_means_warning_steps``), or None for
        an interval the loss cannot know (once per epoch, a full pass), which turns it off. A warning already turned
        off stays off. :class:`GlobalMeanMiner` and the recipes' mean schedule call it; so can a loop of your own.
        """
        if self.stale_means_warning_steps is not None:
            self.stale_means_warning_steps = None if steps is None else max(self.stale_means_warning_steps, 20 * steps)

    @property
    def learn_kappa(self) -> bool:
        return self.log_kappa is not None

    @property
    def kappa(self) -> float:
        """The shared concentration (its current value when learned); setting it takes a finite positive number."""
        return math.exp(self.log_kappa.item()) if self.learn_kappa else self._kappa

    @kappa.setter
    def kappa(self, value: float) -> None:
        value = parse_kappa(value)
        if value is None:
            raise ValueError(
                "Set kappa to a number; 'auto' is resolved when the loss is built (VMFLoss(kappa='auto'))."
            )
        with torch.no_grad():
            if self.learn_kappa:
                self.log_kappa.fill_(math.log(value))
            else:
                self.kappa_value.fill_(value)
                self._kappa = value

    def _kappa_for(self, dtype: torch.dtype, device: torch.device) -> "torch.Tensor | float":
        # A learned kappa stays a tensor so the logits carry its gradient; a fixed one is a Python float.
        return self.log_kappa.to(device, dtype).exp() if self.learn_kappa else self._kappa

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        key = prefix + "kappa_value"
        if not self.learn_kappa and key not in state_dict:
            state_dict[key] = self.kappa_value.clone()  # a checkpoint of a version that did not save kappa
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.learn_kappa:
            self._kappa = self.kappa_value.item()

    def _apply(self, fn, recurse: bool = True):
        # .half() / .to(dtype) cast every floating buffer; the means and kappa are estimates kept in float32 (PML's
        # own losses lose precision this way). Devices still move.
        super()._apply(fn, recurse)
        for name in ("means", "kappa_value"):
            buffer = getattr(self, name)
            if buffer is not None and buffer.dtype != torch.float32:
                setattr(self, name, buffer.float())
        return self

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: Optional[tuple],
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> dict:
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        labels = check_batch(embeddings, labels, self.num_classes, self.embedding_size)
        if embeddings.shape[0] == 0 and self.shard is None:
            return self.zero_losses()  # as PML's losses do: a zero that backpropagates, not the NaN mean of nothing
        weights, given = None, embeddings
        if indices_tuple is not None:
            if _selects_more_than(indices_tuple, embeddings.shape[0]):  # shapes only: nothing is read from the device
                raise ValueError(
                    f"The miner's selection indexes samples beyond the {embeddings.shape[0]} VMFLoss got: "
                    "the miner saw the gathered global batch (PML's DistributedMinerWrapper) and the loss this process's "
                    "share. Wrap neither (GlobalMeanMiner all-reduces its sums, VMFLoss needs no DistributedLossWrapper), "
                    "or wrap both."
                )
            weights = lmu.convert_to_weights(indices_tuple, labels, dtype=embeddings.dtype)
            # Samples the miner left out (a NaN row) enter as zeros: neither their loss nor their gradient is NaN.
            embeddings = torch.where(weights[:, None] > 0, embeddings, 0.0)
        return self._element_losses(self._per_sample_losses(embeddings, given, labels), weights, embeddings)

    def _per_sample_losses(
        self, embeddings: torch.Tensor, given: torch.Tensor, labels: torch.Tensor, rows: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``-log softmax(kappa * cos)[y]`` with the margin on the target, against every mean or the means of the
        sorted class ids ``rows``, which hold every label. ``given``: the embeddings before the miner's masking."""
        targets = labels.clamp(0, self.num_classes - 1)
        if rows is not None:
            targets = torch.searchsorted(rows, labels.to(rows.device)).to(labels.device)
        logits, mean_norms = self._logits_and_mean_norms(embeddings, rows)
        target_has_no_mean = mean_norms[targets] == 0
        non_finite = ~torch.isfinite(given).all(dim=1)  # as given: the miner's zeros hide a NaN row
        num_without_mean, num_non_finite_without_mean = check_label_range(
            labels, self.num_classes, target_has_no_mean.sum(), (target_has_no_mean & non_finite).sum()
        )
        if num_non_finite_without_mean:
            self._raise_non_finite_only_samples(labels[target_has_no_mean & non_finite])
        if num_without_mean:
            self._raise_missing_means(labels[target_has_no_mean])
        self._watch_for_stale_means()
        if self.margin:
            # kappa * (cos_y - m) on the target: subtracting kappa * m there is exact (logit = kappa * cos).
            kappa = self._kappa_for(logits.dtype, logits.device)
            logits = logits - F.one_hot(targets, logits.shape[1]).to(logits.dtype) * (kappa * self.margin)
        return F.cross_entropy(logits, targets, reduction="none")

    @staticmethod
    def _element_losses(losses: torch.Tensor, weights: Optional[torch.Tensor], embeddings: torch.Tensor) -> dict:
        """PML's loss dict of per-sample losses, weighted by the miner's selection (``weights``, or None: all)."""
        if weights is not None:
            losses = losses * weights.to(losses.dtype)
        return {
            "loss": {"losses": losses, "indices": c_f.torch_arange_from_size(embeddings), "reduction_type": "element"}
        }

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Returns ``kappa * cos(embeddings, means)`` of shape ``(N, num_classes)``, ``-inf`` for classes with no mean.

        float32 whatever the autocast context (float64 for float64 embeddings).
        """
        return self._logits_and_mean_norms(embeddings)[0]

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Classifies by the nearest mean direction: ``argmax_c mu_c . z`` over the classes that have a mean."""
        return predict_nearest_mean(embeddings, self.means)

    def _means_on(self, device: torch.device) -> torch.Tensor:
        # Follow the embeddings to their device once, as PML's own losses do with their weights; never change dtype.
        if self.means.device != device:
            self.means = self.means.to(device)
        return self.means

    def _logits_and_mean_norms(
        self, embeddings: torch.Tensor, rows: Optional[torch.Tensor] = None
    ) -> "tuple[torch.Tensor, torch.Tensor]":
        """Logits and mean norms against every mean, or against the means of ``rows`` (sampled classes)."""
        means = self._means_on(embeddings.device)
        if rows is not None:
            means = means[rows]
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            means = means.to(dtype)
            dots = self.distance.compute_mat(self.distance.normalize(embeddings.to(dtype)), means)
            # Dividing the (N, C) dot products by the mean norms gives the cosine without writing normalised means,
            # and one fused multiply-add applies kappa and removes the classes that have no mean (norm 0).
            norms = means.norm(dim=1)
            has_mean = norms > 0
            scale = torch.where(has_mean, self._kappa_for(dtype, norms.device) / norms, 0.0)
            offset = torch.where(has_mean, 0.0, -torch.inf).to(dtype)
            return torch.addcmul(offset, dots, scale), norms

    def _watch_for_stale_means(self) -> None:
        # Every write into the buffer (the miner's copy_, a full pass's copy_, seeding) bumps the tensor's version
        # counter, so this costs no device work and no comparison of values.
        if self.stale_means_warning_steps is None or not torch.is_grad_enabled():
            return
        seen = (id(self.means), self.means._version)
        self._calls_with_same_means = self._calls_with_same_means + 1 if seen == self._means_seen else 0
        self._means_seen = seen
        if self._calls_with_same_means == self.stale_means_warning_steps:
            warnings.warn(
                f"VMFLoss has run {self.stale_means_warning_steps} steps with class means that never changed: nothing "
                "is updating them. Pass each batch through GlobalMeanMiner (loss_func(embeddings, labels, "
                "miner(embeddings, labels)) with miner = GlobalMeanMiner(loss_func)), not another miner, or refresh "
                "them with compute_class_means after each epoch. Set stale_means_warning_steps=None to silence this.",
                RuntimeWarning,
                stacklevel=4,
            )

    @staticmethod
    def _raise_non_finite_only_samples(labels: torch.Tensor) -> None:
        raise ValueError(
            f"The embeddings of class(es) {_some_classes(labels)} are NaN or inf, and those classes have no mean "
            "because these were their only samples (non-finite embeddings are never added to a mean). The network's "
            "output diverged: lower the learning rate, or train in bf16 instead of fp16."
        )

    @staticmethod
    def _raise_missing_means(labels: torch.Tensor) -> None:
        raise ValueError(
            f"VMFLoss has no mean direction yet for class(es) {_some_classes(labels)}. "
            "Pass the batch through GlobalMeanMiner first (it seeds missing means: "
            "loss_func(embeddings, labels, miner(embeddings, labels))), or initialise all means with "
            "loss_func.means.copy_(compute_class_means(model, train_loader, num_classes).means)."
        )


def _some_classes(labels: torch.Tensor) -> str:
    """The first ten distinct labels, for an error message."""
    classes = sorted(set(labels.tolist()))
    return f"{classes[:10]}{'...' if len(classes) > 10 else ''}"


def _selects_more_than(indices_tuple: tuple, batch: int) -> bool:
    """Whether a GlobalMeanMiner selection (each sample at most once as a self-positive, no negatives) names more
    samples than the batch holds: the miner saw a gathered global batch, the loss this process's share."""
    anchors, positives, *negatives = indices_tuple
    return (
        len(indices_tuple) == 4
        and negatives[1].numel() == 0
        and anchors.shape == positives.shape
        and len(anchors) > batch
    )

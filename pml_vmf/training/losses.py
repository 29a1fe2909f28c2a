"""One registry of losses by name, each with its usual miner, so one recipe trains vMF or any PML loss."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..global_mean_miner import GlobalMeanMiner
from ..partial_fc import PartialFCVMFLoss
from ..pml_api import DistributedLossWrapper, DistributedMinerWrapper, losses, miners
from ..sharding import gather_shards
from ..vmf_loss import VMFLoss
from .config import ConfigError
from .softmax_loss import SoftmaxLoss


@dataclass(frozen=True)
class LossSpec:
    """How to build one loss for training.

    Attributes:
        loss: the loss class.
        defaults: its keyword arguments unless the config overrides them.
        miner: the miner class it is usually trained with, or None.
        miner_defaults: the miner's keyword arguments.
        takes_classes: whether it takes ``num_classes`` and ``embedding_size`` (proxy and classifier losses).
        miner_follows: loss parameters whose miner namesake moves with them, keeping the gap between their
            defaults (a margin tuned on the loss alone leaves the miner's margin deciding which pairs are formed:
            contrastive's neg_margin 0.8 and 1.0 then train identically).
    """

    loss: Callable
    defaults: dict = field(default_factory=dict)
    miner: Optional[Callable] = None
    miner_defaults: dict = field(default_factory=dict)
    takes_classes: bool = False
    miner_follows: tuple = ()

    def miner_kwargs(self, params: dict, miner_params: dict) -> dict:
        """The miner's keyword arguments: its defaults, moved with the loss's followed parameters, then the
        config's explicit ``miner_params`` (which always win)."""
        kwargs = dict(self.miner_defaults)
        for key in self.miner_follows:
            if key in params and key in kwargs:
                kwargs[key] = round(kwargs[key] + float(params[key]) - self.defaults[key], 12)
        return dict(kwargs, **miner_params)


def vmf_loss(num_classes: int, embedding_size: int, **kwargs) -> VMFLoss:
    """The recipe's vMF loss: :class:`VMFLoss`, or :class:`PartialFCVMFLoss` when the means are sharded
    (``loss.means.shard``) or negative classes sampled (``loss.params.vmf.sample_rate``)."""
    partial_fc = kwargs.get("shard") is not None or kwargs.get("sample_rate", 1.0) != 1.0
    kwargs = {k: v for k, v in kwargs.items() if partial_fc or k not in ("shard", "sample_rate")}
    return (PartialFCVMFLoss if partial_fc else VMFLoss)(num_classes, embedding_size, **kwargs)


vmf_loss.__signature__ = inspect.signature(PartialFCVMFLoss)  # what a config may set, for ConfigError's list

LOSSES: dict = {
    "vmf": LossSpec(vmf_loss, {"kappa": "auto"}, GlobalMeanMiner, {"update_every": 50}, takes_classes=True),
    "triplet": LossSpec(
        losses.TripletMarginLoss,
        {"margin": 0.1},
        miners.TripletMarginMiner,
        {"margin": 0.1, "type_of_triplets": "semihard"},
        miner_follows=("margin",),
    ),
    "contrastive": LossSpec(
        losses.ContrastiveLoss,
        {"pos_margin": 0.0, "neg_margin": 1.0},
        miners.PairMarginMiner,
        {"pos_margin": 0.2, "neg_margin": 0.8},
        miner_follows=("pos_margin", "neg_margin"),
    ),
    "multi_similarity": LossSpec(
        losses.MultiSimilarityLoss,
        {"alpha": 2.0, "beta": 50.0, "base": 0.5},
        miners.MultiSimilarityMiner,
        {"epsilon": 0.1},
    ),
    "circle": LossSpec(losses.CircleLoss, {"m": 0.4, "gamma": 80.0}),
    "supcon": LossSpec(losses.SupConLoss, {"temperature": 0.1}),
    "proxy_anchor": LossSpec(losses.ProxyAnchorLoss, {"margin": 0.1, "alpha": 32.0}, takes_classes=True),
    "proxy_nca": LossSpec(losses.ProxyNCALoss, {"softmax_scale": 1.0}, takes_classes=True),
    "normalized_softmax": LossSpec(losses.NormalizedSoftmaxLoss, {"temperature": 0.05}, takes_classes=True),
    "arcface": LossSpec(losses.ArcFaceLoss, {"margin": 28.6, "scale": 64.0}, takes_classes=True),
    "cosface": LossSpec(losses.CosFaceLoss, {"margin": 0.35, "scale": 64.0}, takes_classes=True),
    "softmax": LossSpec(SoftmaxLoss, takes_classes=True),  # the classification baseline: linear layer + CE
    "soft_triple": LossSpec(
        losses.SoftTripleLoss, {"centers_per_class": 10, "la": 20.0, "gamma": 0.1, "margin": 0.01}, takes_classes=True
    ),
}


def _construct(factory: Callable, kwargs: dict, what: str) -> object:
    try:
        return factory(**kwargs)
    except TypeError as error:
        accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        raise ConfigError(
            f"{what}: {error}. {factory.__name__} takes: {', '.join(accepted)} (and PML's distance, reducer)."
        ) from error


class TrainingLoss:
    """A loss and its miner, ready for one process or many.

    Under ``torch.distributed``, a PML loss and its miner are wrapped in PML's distributed wrappers, so that pairs,
    triplets and proxy terms are formed over the whole global batch, and :meth:`sync_parameter_gradients` keeps the
    loss parameters (proxies) identical on every process. ``VMFLoss`` needs no wrapper: it is a mean over samples
    with fixed means, and :class:`GlobalMeanMiner` all-reduces the class sums.

    Attributes:
        name: the registry key.
        loss: the unwrapped loss (its ``state_dict`` holds the proxies or vMF means).
        miner: the unwrapped miner, or None.
    """

    def __init__(self, name: str, loss: torch.nn.Module, miner: Optional[torch.nn.Module], distributed: bool) -> None:
        self.name = name
        self.loss = loss
        self.miner = miner
        wrap = distributed and not isinstance(loss, VMFLoss)
        self._world_size = torch.distributed.get_world_size() if distributed else 1
        self._loss_fn = DistributedLossWrapper(loss) if wrap else loss
        self._miner_fn = DistributedMinerWrapper(miner) if (wrap and miner is not None) else miner
        self._wrapped = wrap
        # PML's wrapper returns the world size times the loss (see sync_parameter_gradients); logs divide it out.
        self.backward_scale = self._world_size if wrap else 1

    @property
    def is_vmf(self) -> bool:
        return isinstance(self.loss, VMFLoss)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()  # metric losses in fp32 under autocast
        indices_tuple = self._miner_fn(embeddings, labels) if self._miner_fn is not None else None
        return self._loss_fn(embeddings, labels, indices_tuple)

    def parameters(self) -> list:
        return [p for p in self.loss.parameters() if p.requires_grad]

    @property
    def is_sharded(self) -> bool:
        """Whether each process holds only its range of the class means (``loss.means.shard``)."""
        return getattr(self.loss, "shard", None) is not None

    def checkpoint_objects(self) -> tuple[dict, dict]:
        """``(shared, per_process)``: the loss and miner states a checkpoint holds, by whether they are the same on
        every process. The miner's running sums differ between processes until the next mean update, and sharded
        means differ by design."""
        per_process = {"miner": self.miner} if self.miner is not None else {}
        if self.is_sharded:
            return {}, {"loss": self.loss, **per_process}
        return {"loss": self.loss}, per_process

    def saved_means_and_kappa(self) -> tuple:
        """The class means and kappa a saved model carries for classification: vMF's (every process's shards
        gathered, so every process must call it), or ``(None, None)``."""
        if not self.is_vmf:
            return None, None
        means = gather_shards(self.loss.means, self.loss.shard) if self.is_sharded else self.loss.means
        return means, self.loss.kappa

    def divergence_hints(self) -> list:
        """What to lower, besides the learning rates, when this loss diverges."""
        return [f"the vMF kappa (loss.params.vmf.kappa, now {self.loss.kappa:g})"] if self.is_vmf else []

    def sync_parameter_gradients(self) -> None:
        """Averages loss-parameter gradients over processes, undoing the wrapper's scale by the world size.

        For vMF (not wrapped), a learned kappa's gradient is the plain average over processes.

        PML's wrapper computes the global-batch loss on every process and multiplies it by the world size so that
        DDP's gradient average gives the embeddings their true gradient. The proxies are not in DDP: their gradient
        is the world size times the true one on every process; averaging and dividing restores it exactly.
        """
        if self._world_size == 1:
            return
        # vMF is not wrapped: each process's loss is its own batch's mean, so a learned kappa's gradients are
        # averaged over processes, as DDP does for the network's.
        divisor = self._world_size**2 if self._wrapped else self._world_size
        for parameter in self.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= divisor


def build_training_loss(
    name: str,
    num_classes: int,
    embedding_size: int,
    *,
    params: Optional[dict] = None,
    miner_params: Optional[dict] = None,
    use_miner: bool = True,
    distributed: bool = False,
) -> TrainingLoss:
    """Builds a registered loss with its usual miner.

    Args:
        name: a key of :data:`LOSSES`.
        num_classes: training classes (for proxy losses and vMF).
        embedding_size: embedding width.
        params: loss keyword arguments over the registry defaults (``kappa``, ``margin``, ``temperature``, ...).
        miner_params: miner keyword arguments over the registry defaults.
        use_miner: False to train without the miner (vMF with a full-pass mean update).
        distributed: whether ``torch.distributed`` is initialised with more than one process.

    Raises:
        ConfigError: for an unknown loss name or parameter.
    """
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r}: loss.name must be one of {', '.join(LOSSES)}.")
    spec = LOSSES[name]
    kwargs = dict(spec.defaults, **(params or {}))
    if spec.takes_classes:
        kwargs.update(num_classes=num_classes, embedding_size=embedding_size)
    loss = _construct(spec.loss, kwargs, f"loss.params for {name}")
    miner = None
    if spec.miner is not None and use_miner:
        miner_kwargs = spec.miner_kwargs(params or {}, miner_params or {})
        if spec.miner is GlobalMeanMiner:
            miner = _construct(lambda **kw: GlobalMeanMiner(loss, **kw), miner_kwargs, f"loss.miner_params for {name}")
        else:
            miner = _construct(spec.miner, miner_kwargs, f"loss.miner_params for {name}")
    elif miner_params:
        raise ConfigError(f"loss.miner_params given, but {name} is trained without a miner here.")
    return TrainingLoss(name, loss, miner, distributed)

"""The recipe configuration: typed sections with defaults, loaded from YAML and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import ConfigError
from ..files import atomic_write_text


@dataclass
class RunConfig:
    name: str = "run"  # the run folder is <output_dir>/<name>
    output_dir: str = "runs"
    seed: int = 0
    trackers: list = field(default_factory=list)  # accelerate trackers, e.g. [tensorboard]
    mixed_precision: Optional[str] = None  # no | fp16 | bf16; None keeps `accelerate launch`'s choice
    channels_last: bool = (
        False  # model and images in NHWC (timm's --channels-last): faster convolutions on most hardware
    )


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"  # cub200 | cars196 | sop | inshop | image_folder | fashion_mnist
    root: Optional[str] = None  # the dataset folder; --data-root sets it
    protocol: str = "class_disjoint"  # fashion_mnist and image_folder: class_disjoint | closed_set
    check_protocol: bool = True  # assert the official image and class counts at load
    val_fraction: float = 0.1  # share of the training data held out for checkpoint selection
    val_by: str = "auto"  # classes | images | auto (classes for class-disjoint protocols, images for closed_set)
    max_images_per_class: Optional[int] = None  # subsample every split, for quick runs
    image_size: int = 224
    train_scale: list = field(default_factory=lambda: [0.16, 1.0])  # random resized crop area range
    hflip: float = 0.5
    color_jitter: float = 0.0
    mean: Optional[list] = None  # normalisation; None takes the backbone's timm data config
    std: Optional[list] = None
    num_workers: int = 2
    # keep each evaluation image after its first decode, resized and cropped, as uint8 (3 x image_size^2 bytes an
    # image, per process): later passes over it (validation, vMF's full passes) skip the decoding; read in the
    # training process, without workers
    cache_eval_images: bool = False


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: bool = False  # timm weights by the backbone's tag, e.g. resnet50.tv_in1k (needs the hub)
    pretrained_file: Optional[str] = None  # local weights for the backbone: a timm-compatible state dict
    embedding_size: int = 512
    freeze_batchnorm: bool = False  # keep BatchNorm statistics and affine weights fixed, the usual DML setting
    global_pool: Optional[str] = None  # timm's pooling: avg | max | avgmax | catavgmax; None for the backbone's own
    feature_layernorm: bool = False  # LayerNorm without affine on the pooled features (ProxyNCA++'s head)


@dataclass
class LossConfig:
    name: str = "vmf"  # a key of pml_vmf.training.LOSSES
    # Per loss name, keyword arguments over the registry's defaults, e.g. {vmf: {kappa: 16}, triplet: {margin: 0.1}}:
    # switching loss.name keeps every loss's own settings.
    params: dict = field(default_factory=dict)
    # per loss name, keyword arguments of its miner (vMF's GlobalMeanMiner is set by loss.means)
    miner_params: dict = field(default_factory=dict)
    means: MeansConfig = field(default_factory=lambda: MeansConfig())


@dataclass
class MeansConfig:
    """When and how vMF's class means change. Other losses have no means: they ignore the section, and ``ema`` or
    ``shard`` set for them is refused."""

    # miner: GlobalMeanMiner's sums of the training batches' own embeddings (no extra pass) | full_pass: exact means
    # from a pass over the training set after every epoch, without the miner
    source: str = "miner"
    # source=miner: publish the miner's means every this many steps; null: once, at the end of each epoch (the
    # paper's schedule; a class seen once an epoch then waits an epoch for its mean to move)
    publish_every: Optional[int] = 50
    momentum: float = 0.0  # source=miner: the share of the old mean kept at each publication
    # source=miner: also a full pass after every this many epochs, replacing the miner's means; null: none
    full_pass_every: Optional[int] = None
    init_full_pass: bool = True  # a full pass sets the means before the first step
    # after every step, move the batch's classes' means towards its embeddings with this momentum (CIDER's
    # prototype EMA), on top of the source; null: the means change only by the source
    ema: Optional[float] = None
    # several processes: each holds the means and miner sums of a contiguous range of the classes
    # (pml_vmf.sharding.ClassShard), for heads too large for one process; on one process it changes nothing
    shard: bool = False


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9, nesterov)
    lr: float = 1e-4  # the embedding head's (and the backbone's unless backbone_lr is set)
    backbone_lr: Optional[float] = None  # fine-tuning a pretrained backbone: usually below lr; None for lr
    loss_lr: float = 1e-2  # learning rate of loss parameters (proxies, class weights)
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | constant
    head_warmup_epochs: int = 0  # train only the embedding head (and loss parameters) for this many epochs


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128  # the global batch, split over processes
    samples_per_class: int = 4
    max_steps_per_epoch: Optional[int] = None
    stop_after_epoch: Optional[int] = None  # stop cleanly after this epoch; continue later with --resume
    # end training (and test the best checkpoint) once this many epochs have passed without a better validation
    # score (eval.select_by); None trains all train.epochs. train.epochs stays the cap and the length of the lr schedule.
    early_stopping_patience: Optional[int] = None


@dataclass
class EvalConfig:
    batch_size: int = 256
    every: int = 1  # validate every this many epochs
    # the validation metric that picks the tested checkpoint (and that early stopping watches): a retrieval metric of
    # eval.metrics, or classifier_accuracy (closed-set protocols validated by images: the loss's own classifier)
    select_by: str = "mean_average_precision_at_r"
    recall_at: list = field(default_factory=lambda: [1, 2, 4, 8])
    metrics: list = field(
        default_factory=lambda: ["precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"]
    )
    knn: str = "auto"  # auto (faiss when installed) | faiss | torch
    knn_batch_size: int = 1024  # queries per block of the neighbour search and metrics: bounds memory
    grid_queries: int = 8  # retrieval grid plot: this many queries with their top-5 results


@dataclass
class RecipeConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # per loss name, the settings of that loss's runs over the rest of the config, in the config's own keys, e.g.
    # {vmf: {optim.head_warmup_epochs: 0, model.global_pool: avgmax}}: one config gives each loss the recipe its
    # authors publish. load_config resolves it (command-line overrides still win); save_config writes the result.
    by_loss: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The names of pml_vmf.training.LOSSES, readable without importing torch (a script's --help); a test keeps them equal.
LOSS_NAMES = (
    "vmf", "triplet", "contrastive", "multi_similarity", "circle", "supcon", "proxy_anchor", "proxy_nca",
    "normalized_softmax", "arcface", "cosface", "softmax", "soft_triple",
)  # fmt: skip


def describe_keys(section: Any = None, prefix: str = "") -> list[str]:
    """One line per config key, ``data.image_size  int = 224``: its type and default, for ``--help``."""
    section = RecipeConfig() if section is None else section
    lines = []
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            lines += describe_keys(value, f"{prefix}{f.name}.")
            continue
        kinds = [k for k in typing.get_args(hints[f.name]) if k is not type(None)] or [hints[f.name]]
        name = " or ".join(k.__name__ for k in kinds) + (
            " or null" if type(None) in typing.get_args(hints[f.name]) else ""
        )
        lines.append(f"{prefix}{f.name}  {name} = {'null' if value is None else repr(value)}")
    return lines


def _valid_keys(section: Any, prefix: str = "") -> list:
    keys = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            keys += _valid_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _as_float(value: Any, dotted_key: str) -> float:
    try:
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    except (TypeError, ValueError):
        raise ConfigError(f"Config key {dotted_key!r} takes a number, got {value!r}.") from None


def _takes_float(section: type, key: str) -> bool:
    """Whether the section's annotation of ``key`` admits a float (``float``, ``Optional[float]``), read as a type
    rather than compared as text."""
    annotation = typing.get_type_hints(section)[key]
    return annotation is float or float in typing.get_args(annotation)


def _check_type(section: type, key: str, value: Any, dotted_key: str) -> Any:
    """``value`` if the section's annotation of ``key`` admits it (``null`` only where the annotation is Optional;
    an int where a float is; never a bool for a number), else a ConfigError that names the key."""
    annotation = typing.get_type_hints(section)[key]
    if annotation is Any:
        return value
    args = typing.get_args(annotation)
    nullable = type(None) in args
    kinds = [k for k in args if k is not type(None)] or [annotation]
    if dotted_key == "run.mixed_precision" and value is False:
        return "no"  # YAML reads `no` as false
    if value is None:
        if nullable:
            return None
    elif any(isinstance(value, k) and not (isinstance(value, bool) and k is not bool) for k in kinds):
        return value
    elif float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    names = " or ".join(k.__name__ for k in kinds) + (" or null" if nullable else "")
    raise ConfigError(f"Config key {dotted_key!r} takes a {names}, got {value!r}.")


# Keys of earlier versions and their replacements (CHANGELOG.md): a config that uses one is refused with its new
# name; a run folder's own config.yaml, written by an earlier version, is read with them renamed.
RENAMED_KEYS = {
    "loss.mean_update": "loss.means.source",
    "loss.full_pass_every": "loss.means.full_pass_every",
    "loss.init_full_pass": "loss.means.init_full_pass",
    "loss.mean_ema": "loss.means.ema",
    "loss.shard_means": "loss.means.shard",
    "loss.miner_params.vmf.update_every": "loss.means.publish_every",
    "loss.miner_params.vmf.momentum": "loss.means.momentum",
}


def _renamed(dotted_key: str, value: Any) -> Optional[str]:
    """The replacement of a key of an earlier version (or of the keys ``value`` sets under it), if it is one."""
    keys = [dotted_key]
    if isinstance(value, dict) and dotted_key in ("loss", "loss.miner_params", "loss.miner_params.vmf"):
        keys = [f"{dotted_key}.{key}" for key in _dotted_keys(value)]
    for key in keys:
        if key in RENAMED_KEYS:
            return f"{key} is now {RENAMED_KEYS[key]}"
        if key.startswith("loss.miner_params.vmf"):
            return f"{key}: vMF's miner is set by loss.means (publish_every, momentum)"
    return None


def _upgrade_saved(tree: dict) -> dict:
    """A run's saved config with the keys of :data:`RENAMED_KEYS` moved to their replacements."""
    loss = tree.get("loss")
    if not isinstance(loss, dict):
        return tree
    means = loss.setdefault("means", {})
    for old, new in RENAMED_KEYS.items():
        *parents, leaf = old.split(".")[1:]
        node = loss
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            means[new.rsplit(".", 1)[1]] = node.pop(leaf)
    if isinstance(loss.get("miner_params"), dict):
        loss["miner_params"].pop("vmf", None)
    return tree


def _set(config: RecipeConfig, dotted_key: str, value: Any) -> None:
    renamed = _renamed(dotted_key, value)
    if renamed:
        raise ConfigError(f"{renamed}; the renamed keys are listed in CHANGELOG.md.")
    parts = dotted_key.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        if isinstance(node, dict):  # a free-form section (loss.params): any key, checked by the loss itself
            if depth != len(parts) - 1:
                node = node.setdefault(part, {})
                continue
            node[part] = value
            return
        names = {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else set()
        if part not in names:
            raise ConfigError(f"Unknown config key {dotted_key!r}. Valid keys: {', '.join(_valid_keys(config))}.")
        if depth == len(parts) - 1:
            current = getattr(node, part)
            if dataclasses.is_dataclass(current) or (isinstance(current, dict) and not isinstance(value, dict)):
                raise ConfigError(f"Config key {dotted_key!r} is a section: set its keys, e.g. {dotted_key}.<key>=...")
            if value is not None and _takes_float(type(node), part) and not isinstance(value, bool):
                value = _as_float(value, dotted_key)  # a None default says nothing of the type: the annotation does
            value = _check_type(type(node), part, value, dotted_key)
            if current is not None and value is not None:
                if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
                    value = _as_float(value, dotted_key)
                if not isinstance(value, type(current)):
                    raise ConfigError(
                        f"Config key {dotted_key!r} takes a {type(current).__name__} (default {current!r}), "
                        f"got {value!r}."
                    )
            setattr(node, part, dict(current, **value) if isinstance(current, dict) else value)
            return
        node = getattr(node, part)


def _apply(config: RecipeConfig, tree: dict, prefix: str = "") -> None:
    for key, value in tree.items():
        dotted_key = f"{prefix}{key}"
        node: Any = config
        for part in dotted_key.split("."):
            node = getattr(node, part, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(node):
            _apply(config, value, f"{dotted_key}.")
        else:
            _set(config, dotted_key, value)


class _YAMLLoader(yaml.SafeLoader):
    """YAML's safe loader, reading ``1e-4`` and ``1e-1`` (no dot) as numbers, as YAML 1.2 does; YAML 1.1 reads them
    as strings."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def parse_override(text: str) -> tuple:
    """Splits ``key.sub=value`` and reads the value as YAML (``1e-4``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} is not of the form key.sub=value (e.g. loss.name=multi_similarity).")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.load(raw, Loader=_YAMLLoader)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"Override {text!r}: its value is not valid YAML ({_first_line(error)}); quote strings, close brackets."
        ) from None


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _dotted_keys(tree: dict, prefix: str = "") -> list:
    """The keys of a nested mapping, dotted: ``{"model": {"global_pool": ...}}`` gives ``["model.global_pool"]``."""
    keys = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys += _dotted_keys(value, f"{dotted}.") if isinstance(value, dict) else [dotted]
    return keys


def _resolve_by_loss(config: RecipeConfig, overrides: list) -> None:
    """Applies ``config.by_loss[config.loss.name]``, then ``overrides`` again so that the command line wins.

    Every loss's entry is checked on a scratch config first, so that a misspelt key fails every run, not only the
    runs of that loss.
    """
    for name, entry in config.by_loss.items():
        if not isinstance(entry, dict):
            raise ConfigError(
                f"by_loss.{name} holds config keys for {name}'s runs, e.g. {{optim.head_warmup_epochs: 0}}; got {entry!r}."
            )
        circular = [key for key in _dotted_keys(entry) if key == "loss.name" or key.startswith("by_loss")]
        if circular:
            raise ConfigError(
                f"by_loss.{name} sets {', '.join(circular)}: an entry says how {name}'s runs train; it cannot choose the loss or other entries."
            )
        try:
            _apply(RecipeConfig(), entry)
        except ConfigError as error:
            raise ConfigError(f"by_loss.{name}: {error}") from None
    entry = config.by_loss.get(config.loss.name)
    if entry:
        _apply(config, entry)
        for key, value in overrides:
            if not key.startswith("by_loss."):
                _set(config, key, value)


def _merged(base: dict, child: dict) -> dict:
    """``child`` over ``base``, section by section: a key the child sets replaces the base's, one it leaves out keeps it
    (``loss.params.vmf: {kappa: 16}`` keeps the base's margin)."""
    merged = dict(base)
    for key, value in child.items():
        inherited = merged.get(key)
        merged[key] = _merged(inherited, value) if isinstance(value, dict) and isinstance(inherited, dict) else value
    return merged


def _read_config_tree(path: Path, inheriting: tuple = (), saved: bool = False) -> dict:
    """The mapping of a config file, merged over the config its ``base`` key names (a path relative to its folder)."""
    if path.resolve() in inheriting:
        chain = " -> ".join(str(p) for p in (*inheriting, path.resolve()))
        raise ConfigError(f"{path} inherits from itself ({chain}): remove one of the base keys.")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAMLLoader) or {}
    except yaml.YAMLError as error:  # its message names the line and column
        raise ConfigError(f"{path} is not valid YAML: {_first_line(error)}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}): save the config as UTF-8.") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (run, data, model, ...), got {type(tree).__name__}.")
    if saved:
        return _upgrade_saved(tree)
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base names one config file, a path relative to {path.parent}; got {base!r}.")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(
            f"{path}: its base {base!r} does not exist ({base_path}); base paths are relative to the file."
        )
    return _merged(_read_config_tree(base_path, (*inheriting, path.resolve())), tree)


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = (), saved: bool = False) -> RecipeConfig:
    """Reads a recipe config: the defaults, then the YAML file (over the config its ``base`` key names, if any), then
    the file's ``by_loss`` entry for the run's loss, then ``key=value`` overrides, in that order.

    Args:
        path: a YAML file whose sections and keys are those of :class:`RecipeConfig`, and optionally ``base``: another
            config file (relative to this one's folder) whose values this one starts from and overrides key by key;
            None for the defaults.
        overrides: ``section.key=value`` strings; values are parsed as YAML.
        saved: ``path`` is a run folder's ``config.yaml``, written by this package: keys of earlier versions are
            read under their new names (:data:`RENAMED_KEYS`) instead of refused.

    Returns:
        The resolved config.

    Raises:
        ConfigError: for a key that does not exist (the message lists the valid ones, also inside ``by_loss``), a
            malformed override, or a ``base`` that is missing or inherits from itself.
        FileNotFoundError: when ``path`` does not exist.
    """
    config = RecipeConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file {path} does not exist; the shipped ones are in recipes/configs/.")
        _apply(config, _read_config_tree(path, saved=saved))
    parsed = [parse_override(text) for text in overrides]
    for key, value in parsed:
        _set(config, key, value)
    _resolve_by_loss(config, parsed)
    return config


def save_config(config: RecipeConfig, path: str | Path) -> None:
    """Writes the resolved config as YAML, readable again by :func:`load_config`. ``by_loss`` is left out: its
    entry is already in the values, and read again it would undo a command-line override of one of them."""
    tree = config.to_dict()
    tree["by_loss"] = {}
    atomic_write_text(Path(path), yaml.safe_dump(tree, sort_keys=False))

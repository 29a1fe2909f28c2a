"""The one model format, written by training and by exports and read by inference: a folder of ``embedder.json``
(architecture, eval transform, class names, vMF kappa, open-set calibration) and safetensors weights. Reading it
unpickles nothing."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch

from ..errors import DamagedFileError, UnsafeFileError
from ..files import make_readable, staged_folder
from ..input_checks import is_finite_number, is_int_at_least
from ..open_set import KAPPA_SOURCES, SCORES
from .embedding_model import EmbeddingModel, create_embedding_model

CONFIG_FILE = "embedder.json"
WEIGHTS_FILE = "model.safetensors"
MEANS_FILE = "class_means.safetensors"
FORMAT_VERSION = 1
CLASS_STATISTICS = ("class_counts", "resultant_lengths")
"""What ``class_means.safetensors`` may hold beside the means, one value per class: the training images of each class
and their mean resultant length, from which inference estimates each class's concentration."""
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


class ModelNotFoundError(FileNotFoundError):
    """The path given as a model is not a model folder (nor a run folder holding one)."""


@dataclass
class EmbedderConfig:
    """What rebuilds an embedding model without the training config; written as ``embedder.json``.

    Attributes:
        backbone: the timm model name.
        embedding_size: the width of the embeddings.
        eval_transform: :func:`~pml_vmf.data.eval_transform_settings` (input size, interpolation, mean, std, crop).
        freeze_batchnorm, global_pool, feature_layernorm: the architecture options it was trained with.
        class_names: the training classes' names by label, or None.
        kappa: the vMF concentration when trained with vMF, else None.
        loss: the loss it was trained with.
        open_set: the calibration of the vMF posterior and of the unknown-class threshold
            (:meth:`~pml_vmf.inference.Embedder.calibrate`), or None: ``kappas`` (``per_class`` or ``shared``),
            ``temperature``, ``score`` (an open-set score's name), ``threshold`` (queries scoring below it are of no
            known class), ``tpr`` (the share of held-out known-class images it accepts) and ``known_images`` (how many
            it was chosen on).
        format_version: the version of this format; a reader refuses newer ones.
        extra: free-form notes that travel with the model.
    """

    backbone: str
    embedding_size: int
    eval_transform: dict
    freeze_batchnorm: bool = False
    global_pool: Optional[str] = None
    feature_layernorm: bool = False
    class_names: Optional[list] = None
    kappa: Optional[float] = None
    loss: Optional[str] = None
    open_set: Optional[dict] = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.eval_transform["input_size"][-1])

    def build_model(self) -> EmbeddingModel:
        """The architecture, with freshly initialised weights (no download)."""
        return create_embedding_model(
            self.backbone, self.embedding_size, freeze_batchnorm=self.freeze_batchnorm, global_pool=self.global_pool,
            feature_layernorm=self.feature_layernorm,
        )  # fmt: skip


def write_model_files(
    folder: Path,
    model: torch.nn.Module,
    config: EmbedderConfig,
    class_means: Optional[torch.Tensor] = None,
    class_statistics: Optional[dict] = None,
) -> None:
    """Writes ``embedder.json``, ``model.safetensors`` and, with means, ``class_means.safetensors`` (with the
    :data:`CLASS_STATISTICS` of ``class_statistics`` beside them) into ``folder`` (an empty folder being staged: see
    :func:`save_model_folder`)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    make_readable(folder / WEIGHTS_FILE)
    if class_means is not None:
        tensors = {"class_means": class_means.detach().float().cpu().contiguous()}
        for name in CLASS_STATISTICS:
            if class_statistics is not None and class_statistics.get(name) is not None:
                tensors[name] = class_statistics[name].detach().double().cpu().contiguous()
        save_file(tensors, str(folder / MEANS_FILE))
        make_readable(folder / MEANS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=1) + "\n")


def save_model_folder(
    folder: Path,
    model: torch.nn.Module,
    config: EmbedderConfig,
    class_means: Optional[torch.Tensor] = None,
    class_statistics: Optional[dict] = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes a model folder atomically: complete or not at all, never mixed with another model's files.

    Raises:
        FileExistsError: when ``folder`` exists and ``overwrite`` is false.
    """
    with staged_folder(
        folder, overwrite=overwrite, what="model", owned_names=(CONFIG_FILE, WEIGHTS_FILE, MEANS_FILE)
    ) as tmp:
        write_model_files(tmp, model, config, class_means, class_statistics)
    return Path(folder)


def read_model_config(folder: Path) -> EmbedderConfig:
    """Reads ``folder/embedder.json``. Keys this version does not know are ignored with a warning, so that an export
    of a newer pml-vmf of the same format version loads.

    Raises:
        DamagedFileError: when the file is not JSON or lacks a required key.
        ValueError: when it was written in a newer format version.
    """
    path = Path(folder) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(
            f"{path} is not valid JSON ({error}): the model folder is damaged; export it again."
        ) from None
    if not isinstance(raw, dict):
        raise DamagedFileError(f"{path} must hold a JSON object, got {type(raw).__name__}: export the model again.")
    version = raw.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise DamagedFileError(f"{path}: format_version must be an integer, got {version!r}: export the model again.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {raw['format_version']}; this pml-vmf reads up to {FORMAT_VERSION}: upgrade pml-vmf."
        )
    problem = _config_problem(raw)
    if problem:
        raise DamagedFileError(f"{path}: {problem}: the model folder is damaged or was edited; export it again.")
    known = {f.name for f in fields(EmbedderConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        warnings.warn(
            f"{path}: ignoring keys this pml-vmf does not know: {', '.join(unknown)} (written by a newer version?).",
            stacklevel=2,
        )
    try:
        return EmbedderConfig(**{k: v for k, v in raw.items() if k in known})
    except TypeError:
        missing = [
            f.name
            for f in fields(EmbedderConfig)
            if f.name not in raw and f.name in ("backbone", "embedding_size", "eval_transform")
        ]
        raise DamagedFileError(
            f"{path} lacks {', '.join(missing)}: the model folder is damaged; export it again."
        ) from None


MAX_INPUT_SIDE = 4096  # pixels: a larger eval size is a damaged file, not a model (it would allocate gigabytes)
MAX_EMBEDDING_SIZE = 65536
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _config_problem(raw: dict) -> Optional[str]:
    """What is wrong with the values of an ``embedder.json`` (types and bounds), or None."""
    missing = [key for key in ("backbone", "embedding_size", "eval_transform") if key not in raw]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(raw["backbone"], str) or not raw["backbone"]:
        return f"backbone must be a timm model name, got {raw['backbone']!r}"
    if not is_int_at_least(raw["embedding_size"], 1) or raw["embedding_size"] > MAX_EMBEDDING_SIZE:
        return f"embedding_size must be an integer from 1 to {MAX_EMBEDDING_SIZE}, got {raw['embedding_size']!r}"
    t = raw["eval_transform"]
    if not isinstance(t, dict):
        return f"eval_transform must be an object, got {t!r}"
    for key in ("input_size", "interpolation", "mean", "std", "crop_pct"):
        if key not in t:
            return f"eval_transform lacks {key}"
    size = t["input_size"]
    if not (
        isinstance(size, list)
        and len(size) == 3
        and size[0] == 3
        and all(is_int_at_least(v, 1) and v <= MAX_INPUT_SIDE for v in size[1:])
    ):
        return f"eval_transform.input_size must be [3, H, W] with sides 1 to {MAX_INPUT_SIDE}, got {size!r}"
    if t["interpolation"] not in INTERPOLATIONS:
        return f"eval_transform.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {t['interpolation']!r}"
    for key in ("mean", "std"):
        if not (isinstance(t[key], list) and len(t[key]) == 3 and all(is_finite_number(v) for v in t[key])) or (
            key == "std" and min(t[key]) <= 0
        ):
            return f"eval_transform.{key} must be three {'positive ' if key == 'std' else ''}numbers, got {t[key]!r}"
    if not (is_finite_number(t["crop_pct"]) and 0 < t["crop_pct"] <= 2):
        return f"eval_transform.crop_pct must be in (0, 2], got {t['crop_pct']!r}"
    if t.get("crop_mode") not in (None, "center", "squash", "border"):
        return f"eval_transform.crop_mode must be center, squash, border or null, got {t['crop_mode']!r}"
    kappa = raw.get("kappa")
    if kappa is not None and not (is_finite_number(kappa) and kappa > 0):
        return f"kappa must be a positive number (or null), got {kappa!r}"
    problem = _open_set_problem(raw.get("open_set"))
    if problem:
        return problem
    names = raw.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return f"class_names must be a list of strings (or null), got {names if not isinstance(names, list) else '[...]'!r}"
    for key in ("freeze_batchnorm", "feature_layernorm"):
        if key in raw and not isinstance(raw[key], bool):
            return f"{key} must be true or false, got {raw[key]!r}"
    for key in ("global_pool", "loss"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            return f"{key} must be a string (or null), got {raw[key]!r}"
    if "extra" in raw and not isinstance(raw["extra"], dict):
        return f"extra must be an object, got {raw['extra']!r}"
    return None


def _open_set_problem(open_set) -> Optional[str]:
    """What is wrong with an ``embedder.json``'s ``open_set`` block, or None."""
    if open_set is None:
        return None
    if not isinstance(open_set, dict):
        return f"open_set must be an object (or null), got {open_set!r}"
    missing = [k for k in ("kappas", "temperature", "score", "threshold", "tpr") if k not in open_set]
    if missing:
        return f"open_set lacks {', '.join(missing)}"
    if open_set["kappas"] not in KAPPA_SOURCES:
        return f"open_set.kappas must be one of {', '.join(KAPPA_SOURCES)}, got {open_set['kappas']!r}"
    if open_set["score"] not in SCORES:
        return f"open_set.score must be one of {', '.join(SCORES)}, got {open_set['score']!r}"
    if not (is_finite_number(open_set["temperature"]) and open_set["temperature"] > 0):
        return f"open_set.temperature must be a positive number, got {open_set['temperature']!r}"
    if not is_finite_number(open_set["threshold"]):
        return f"open_set.threshold must be a number, got {open_set['threshold']!r}"
    if not (is_finite_number(open_set["tpr"]) and 0 < open_set["tpr"] <= 1):
        return f"open_set.tpr must be in (0, 1], got {open_set['tpr']!r}"
    return None


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError for truncated or altered files
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> DamagedFileError:
    return DamagedFileError(f"{path} cannot be read as safetensors ({error}): the file is truncated or damaged.")


def read_model_folder(folder: Path) -> tuple[EmbeddingModel, EmbedderConfig, Optional[torch.Tensor]]:
    """Reads a model folder: the model (in eval mode, on the CPU), its config, and its vMF class means or None.

    Raises:
        ModelNotFoundError: when ``folder`` holds no ``embedder.json``.
        UnsafeFileError: when ``folder`` is a pickle file (``.pt``, ``.pkl``, ...), which is never loaded.
        DamagedFileError: when a file is missing, truncated or does not fit the architecture, naming it.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFileError(
            f"{folder} is a pickle file, and pml-vmf does not load models from pickles: unpickling a file can run any "
            f"code in it. Give a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}), as training and recipes/export.py write."
        )
    if not (folder / CONFIG_FILE).is_file():
        raise ModelNotFoundError(
            f"No model at {folder}: expected a model folder holding {CONFIG_FILE} and {WEIGHTS_FILE} (a run's model/ "
            "folder, or recipes/export.py --run RUN --out FOLDER), or a run folder."
        )
    config = read_model_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise DamagedFileError(f"{folder / WEIGHTS_FILE} is missing: the model folder is incomplete; export it again.")
    model = config.build_model()
    state = _load_safetensors(folder / WEIGHTS_FILE)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[:3]
        raise DamagedFileError(
            f"{folder / WEIGHTS_FILE} does not fit the architecture {CONFIG_FILE} describes ({' '.join(first)})."
        ) from None
    means = _load_safetensors(folder / MEANS_FILE).get("class_means") if (folder / MEANS_FILE).is_file() else None
    if means is not None and (means.ndim != 2 or means.shape[1] != config.embedding_size):
        raise DamagedFileError(
            f"{folder / MEANS_FILE} holds means of shape {tuple(means.shape)}, not (classes, {config.embedding_size})."
        )
    if means is not None and config.class_names is not None and len(config.class_names) != means.shape[0]:
        raise DamagedFileError(
            f"{folder / CONFIG_FILE} names {len(config.class_names)} classes but {folder / MEANS_FILE} holds {means.shape[0]} means: "
            "they come from different models; export the model again."
        )
    if means is not None and not torch.isfinite(means).all():
        raise DamagedFileError(f"{folder / MEANS_FILE} holds NaN or inf values: export the model again.")
    return model.eval(), config, means


def read_class_statistics(folder: Path) -> Optional[dict]:
    """The :data:`CLASS_STATISTICS` saved beside a model folder's means, or None when the folder has none (a model
    of another loss, or written before they were saved).

    Raises:
        DamagedFileError: when they do not match the means or hold impossible values.
    """
    from safetensors import safe_open

    path = Path(folder) / MEANS_FILE
    if not path.is_file():
        return None
    try:  # only the statistics and the means' shape: the means themselves were read with the model
        with safe_open(str(path), framework="pt") as f:
            if not all(name in f.keys() for name in CLASS_STATISTICS):
                return None
            rows = f.get_slice("class_means").get_shape()[0]
            counts, lengths = (f.get_tensor(name) for name in CLASS_STATISTICS)
    except Exception as error:  # safetensors raises its own SafetensorError for truncated or altered files
        raise _unreadable(path, error) from None
    if counts.shape != (rows,) or lengths.shape != (rows,):
        return _damaged(
            path, f"holds class statistics of shapes {tuple(counts.shape)}, {tuple(lengths.shape)} for {rows} means"
        )
    if not bool(torch.isfinite(counts).all() and (counts >= 0).all()):
        return _damaged(path, "holds class counts that are not finite and non-negative")
    has_samples = counts > 0
    if not bool((lengths[has_samples] >= 0).all() and (lengths[has_samples] <= 1 + 1e-6).all()):
        return _damaged(path, "holds mean resultant lengths outside [0, 1]")
    return {"class_counts": counts, "resultant_lengths": lengths}


def _damaged(path: Path, problem: str):
    raise DamagedFileError(f"{path} {problem}: export the model again.")


def model_fingerprint(model: torch.nn.Module, eval_transform: dict) -> str:
    """A SHA-256 of what maps an image to its embedding: the weights (names, dtypes, shapes, values, in state-dict
    order) and the eval transform. Two models embed alike exactly when their fingerprints agree."""
    digest = hashlib.sha256(json.dumps(eval_transform, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

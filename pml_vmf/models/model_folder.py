"""The one model format, written by training and by exports and read by inference: a folder of ``embedder.json``
(architecture, eval transform, class names, vMF kappa) and safetensors weights. Reading it unpickles nothing."""

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
from .embedding_model import EmbeddingModel, create_embedding_model

CONFIG_FILE = "embedder.json"
WEIGHTS_FILE = "model.safetensors"
MEANS_FILE = "class_means.safetensors"
FORMAT_VERSION = 1
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


def write_model_files(folder: Path, model: torch.nn.Module, config: EmbedderConfig, class_means: Optional[torch.Tensor] = None) -> None:
    """Writes ``embedder.json``, ``model.safetensors`` and, with means, ``class_means.safetensors`` into ``folder``
    (an empty folder being staged: see :func:`save_model_folder`)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    make_readable(folder / WEIGHTS_FILE)
    if class_means is not None:
        save_file({"class_means": class_means.detach().float().cpu().contiguous()}, str(folder / MEANS_FILE))
        make_readable(folder / MEANS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=1) + "\n")


def save_model_folder(
    folder: Path, model: torch.nn.Module, config: EmbedderConfig, class_means: Optional[torch.Tensor] = None, *, overwrite: bool = False
) -> Path:
    """Writes a model folder atomically: complete or not at all, never mixed with another model's files.

    Raises:
        FileExistsError: when ``folder`` exists and ``overwrite`` is false.
    """
    with staged_folder(folder, overwrite=overwrite, what="model", owned_names=(CONFIG_FILE, WEIGHTS_FILE, MEANS_FILE)) as tmp:
        write_model_files(tmp, model, config, class_means)
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
        raise DamagedFileError(f"{path} is not valid JSON ({error}): the model folder is damaged; export it again.") from None
    if not isinstance(raw, dict):
        raise DamagedFileError(f"{path} must hold a JSON object, got {type(raw).__name__}: export the model again.")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {raw['format_version']}; this pml-vmf reads up to {FORMAT_VERSION}: upgrade pml-vmf.")
    known = {f.name for f in fields(EmbedderConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        warnings.warn(f"{path}: ignoring keys this pml-vmf does not know: {', '.join(unknown)} (written by a newer version?).", stacklevel=2)
    try:
        return EmbedderConfig(**{k: v for k, v in raw.items() if k in known})
    except TypeError:
        missing = [f.name for f in fields(EmbedderConfig) if f.name not in raw and f.name in ("backbone", "embedding_size", "eval_transform")]
        raise DamagedFileError(f"{path} lacks {', '.join(missing)}: the model folder is damaged; export it again.") from None


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError for truncated or altered files
        raise DamagedFileError(f"{path} cannot be read as safetensors ({error}): the file is truncated or damaged.") from None


def read_model_folder(folder: Path) -> "tuple[EmbeddingModel, EmbedderConfig, Optional[torch.Tensor]]":
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
        raise DamagedFileError(f"{folder / WEIGHTS_FILE} does not fit the architecture {CONFIG_FILE} describes ({' '.join(first)}).") from None
    means = _load_safetensors(folder / MEANS_FILE).get("class_means") if (folder / MEANS_FILE).is_file() else None
    if means is not None and (means.ndim != 2 or means.shape[1] != config.embedding_size):
        raise DamagedFileError(f"{folder / MEANS_FILE} holds means of shape {tuple(means.shape)}, not (classes, {config.embedding_size}).")
    return model.eval(), config, means


def model_fingerprint(model: torch.nn.Module, eval_transform: dict) -> str:
    """A SHA-256 of what maps an image to its embedding: the weights (names, dtypes, shapes, values, in state-dict
    order) and the eval transform. Two models embed alike exactly when their fingerprints agree."""
    digest = hashlib.sha256(json.dumps(eval_transform, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

"""A trained embedding network with everything needed to use it: its eval transform, class names and vMF means."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..class_means import predict_nearest_mean
from ..data import ImageDataset, LabelledImages, eval_transform_from_settings
from ..data.image_dataset import rgb_on_white
from ..data.image_folder import list_images
from ..evaluation import embed_dataset
from ..training.model import EmbeddingModel, create_embedding_model

CONFIG_FILE = "embedder.json"
WEIGHTS_FILE = "model.safetensors"
MEANS_FILE = "class_means.safetensors"
FORMAT_VERSION = 1


class ExportNotFoundError(FileNotFoundError):
    """The path given as a model is neither an export folder nor a run's ``embedding_model.pt``."""


@dataclass
class EmbedderConfig:
    """What rebuilds an embedder without the training config; written as ``embedder.json``.

    Attributes:
        backbone: the timm model name.
        embedding_size: the width of the embeddings.
        eval_transform: :func:`~pml_vmf.data.eval_transform_settings` (input size, interpolation, mean, std, crop).
        freeze_batchnorm, global_pool, feature_layernorm: the architecture options it was trained with.
        class_names: the training classes' names by label, or None.
        kappa: the vMF concentration when trained with vMF, else None.
        loss: the loss it was trained with.
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


class Embedder:
    """Images in, L2-normalised embeddings out; and, for a model trained with vMF, the class posterior.

    Build one with :func:`load_embedder`. Embeddings are float32 unit vectors, so an inner product is a cosine.

    Args:
        model: the embedding network (put in eval mode).
        config: its :class:`EmbedderConfig`.
        class_means: ``(num_classes, embedding_size)`` vMF mean directions, or None.
    """

    def __init__(self, model: EmbeddingModel, config: EmbedderConfig, class_means: Optional[torch.Tensor] = None) -> None:
        self.model = model.eval()
        self.config = config
        self.class_means = F.normalize(class_means.float(), dim=1) if class_means is not None else None
        self.transform: Callable = eval_transform_from_settings(config.eval_transform)

    @property
    def embedding_size(self) -> int:
        return self.config.embedding_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Union[str, torch.device]) -> "Embedder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def embed_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Embeds a batch already transformed, ``(N, 3, H, W)``; returns ``(N, embedding_size)`` unit vectors."""
        return F.normalize(self.model(images.to(self.device)).float(), dim=1)

    def transform_images(self, images: Sequence[Union[Image.Image, str, Path]]) -> torch.Tensor:
        """PIL images or image files as the model's input batch: the eval transform, transparency onto white."""
        return torch.stack([self.transform(_as_rgb(image)) for image in images])

    def embed_images(self, images: Sequence[Union[Image.Image, str, Path]]) -> torch.Tensor:
        """Embeds PIL images or image files (transparent ones composited onto white, as in training)."""
        return self.embed_tensor(self.transform_images(images)).cpu()

    def embed_folder(
        self,
        folder: Union[str, Path],
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        accelerator=None,
        progress: bool = True,
    ) -> "tuple[torch.Tensor, list]":
        """Embeds every image under ``folder``, at any depth; unreadable files are skipped with a warning.

        Args:
            folder: a folder of images.
            batch_size: images per forward pass (per process).
            num_workers: DataLoader workers.
            accelerator: an ``accelerate.Accelerator``: each process embeds its share of the images and every process
                gets all embeddings, in the order of the returned paths, under its mixed precision (``accelerate
                launch --mixed_precision bf16``). None: this process does all, in float32.
            progress: show a progress bar (on the main process).

        Returns:
            ``(embeddings, paths)``: ``(N, embedding_size)`` float32 unit vectors on the CPU, and the N image paths.

        Raises:
            DatasetNotFoundError: when the folder does not exist or holds no readable image.
        """
        paths = list_images(Path(folder))
        images = LabelledImages(paths, torch.zeros(len(paths), dtype=torch.long).numpy())
        loader = torch.utils.data.DataLoader(ImageDataset(images, self.transform), batch_size=batch_size, num_workers=num_workers)
        gather = None
        if accelerator is not None and accelerator.num_processes > 1:
            loader, gather = accelerator.prepare(loader), accelerator.gather_for_metrics
        show = progress and (accelerator is None or accelerator.is_local_main_process)
        embeddings, _, indices = embed_dataset(
            UnitEmbeddings(self.model), _progress(loader, show, f"embedding {len(paths)} images"), device=self.device,
            gather=gather, autocast=accelerator.autocast if accelerator is not None else None,
        )  # fmt: skip
        return embeddings, [str(paths[i]) for i in indices.tolist()]

    def classify(self, embeddings: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
        """The nearest class mean of each embedding and its probability under the vMF posterior,
        ``softmax_c(kappa * cos(z, mu_c))``.

        Returns:
            ``(labels, probabilities)``, each ``(N,)``; ``config.class_names[label]`` names a label.

        Raises:
            ValueError: when the model was not trained with vMF (no means or kappa were exported).
        """
        if self.class_means is None or self.config.kappa is None:
            raise ValueError(
                f"This model was trained with {self.config.loss or 'a loss'} and has no vMF class means and kappa: "
                "classification by the vMF posterior needs a model trained with loss.name=vmf on a closed set."
            )
        embeddings = F.normalize(embeddings.float(), dim=1)
        means = self.class_means.to(embeddings.device)
        labels = predict_nearest_mean(embeddings, means)
        has_mean = means.ne(0).any(dim=1)
        logits = (self.config.kappa * embeddings @ means.T).masked_fill(~has_mean, -torch.inf)
        return labels, torch.softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]

    def save(self, folder: Union[str, Path]) -> Path:
        """Writes ``folder/embedder.json``, ``model.safetensors`` and, with means, ``class_means.safetensors``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        if self.class_means is not None:
            save_file({"class_means": self.class_means.cpu().contiguous()}, str(folder / MEANS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1) + "\n")
        return folder


class UnitEmbeddings(torch.nn.Module):
    """The network with the L2 normalisation every consumer applies: it outputs unit vectors (also in exports)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).float(), dim=1)


def _progress(loader, show: bool, description: str):
    from tqdm.auto import tqdm

    return tqdm(loader, desc=description, disable=not show)


def _as_rgb(image: Union[Image.Image, str, Path]) -> Image.Image:
    if isinstance(image, Image.Image):
        return rgb_on_white(image)
    from ..data.image_dataset import load_rgb

    return load_rgb(LabelledImages([Path(image)], torch.zeros(1, dtype=torch.long).numpy()), 0)


def load_embedder(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Embedder:
    """Loads an embedder from an export folder (``recipes/export.py``) or a run's ``embedding_model.pt``.

    Args:
        path: the export folder (holding ``embedder.json``), a run folder, or its ``embedding_model.pt``.
        device: where the model runs.

    Raises:
        ExportNotFoundError: when ``path`` holds neither.
    """
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return _load_export_folder(path).to(device)
    model_file = path / "embedding_model.pt" if path.is_dir() else path
    if model_file.is_file() and model_file.suffix == ".pt":
        return embedder_from_run_file(model_file).to(device)
    raise ExportNotFoundError(
        f"No model at {path}: expected an export folder holding {CONFIG_FILE} (recipes/export.py --run RUN --out "
        "FOLDER writes one), a run folder, or a run's embedding_model.pt."
    )


def _build_model(config: EmbedderConfig) -> EmbeddingModel:
    return create_embedding_model(
        config.backbone,
        config.embedding_size,
        freeze_batchnorm=config.freeze_batchnorm,
        global_pool=config.global_pool,
        feature_layernorm=config.feature_layernorm,
    )


def _load_export_folder(folder: Path) -> Embedder:
    from safetensors.torch import load_file

    raw = json.loads((folder / CONFIG_FILE).read_text())
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{folder / CONFIG_FILE} has format_version {raw['format_version']}; this pml-vmf reads up to {FORMAT_VERSION}: upgrade pml-vmf.")
    config = EmbedderConfig(**raw)
    model = _build_model(config)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    means = load_file(str(folder / MEANS_FILE))["class_means"] if (folder / MEANS_FILE).is_file() else None
    return Embedder(model, config, means)


def embedder_from_run_file(model_file: Path) -> Embedder:
    """An :class:`Embedder` from a run's ``embedding_model.pt``. Files written before the eval transform was recorded
    get timm's data config for the backbone at the run's image size, with ImageNet's default statistics."""
    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    config = EmbedderConfig(
        backbone=payload["backbone"],
        embedding_size=payload["embedding_size"],
        eval_transform=payload.get("eval_transform") or _default_transform(payload, model_file),
        freeze_batchnorm=payload["freeze_batchnorm"],
        global_pool=payload.get("global_pool"),
        feature_layernorm=payload.get("feature_layernorm", False),
        class_names=payload.get("class_names"),
        kappa=payload.get("kappa", _kappa_from_run_config(model_file) if payload.get("class_means") is not None else None),
        loss=payload.get("loss"),
    )
    model = _build_model(config)
    model.load_state_dict(payload["state_dict"])
    return Embedder(model, config, payload.get("class_means"))


def _run_config(model_file: Path):
    config_file = model_file.parent / "config.yaml"
    if not config_file.is_file():
        return None
    from ..training import load_config

    return load_config(config_file)


def _kappa_from_run_config(model_file: Path) -> Optional[float]:
    # Files written before kappa was recorded: the run folder's config.yaml holds it (or the registry default).
    config = _run_config(model_file)
    if config is None:
        return None
    from ..training import LOSSES

    return float((config.loss.params.get("vmf") or {}).get("kappa", LOSSES["vmf"].defaults["kappa"]))


def _default_transform(payload: dict, model_file: Path) -> dict:
    # Files written before the eval transform was recorded: rebuild it as training did, from the run's config
    # (its data.mean / data.std overrides) where the run folder is there, else from timm's config for the backbone.
    from ..data import eval_transform_settings

    config = _run_config(model_file)
    model = create_embedding_model(payload["backbone"], payload["embedding_size"])
    mean, std = (config.data.mean, config.data.std) if config is not None else (None, None)
    return eval_transform_settings(model.backbone, payload["image_size"], mean=mean, std=std)

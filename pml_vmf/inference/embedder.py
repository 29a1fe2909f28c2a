"""A trained embedding network with everything needed to use it: its eval transform, class names, vMF means and
concentrations, and the calibration that lets it say "of no class I know"."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.image_dataset import ImageDataset, load_rgb, rgb_on_white
from ..data.image_folder import list_images
from ..data.labelled_images import LabelledImages
from ..data.transforms import eval_transform_from_settings
from ..evaluation.embedding import embed_dataset
from ..models import (
    CONFIG_FILE,
    EmbedderConfig,
    EmbeddingModel,
    ModelNotFoundError,
    model_fingerprint,
    read_class_statistics,
    read_model_folder,
    save_model_folder,
)
from ..open_set import KAPPA_SOURCES, SCORES, VMFClassModel, threshold_at_tpr
from ..progress_bars import progress_bar

RUN_MODEL_FOLDER = "model"  # a run writes its trained model to runs/<name>/model/
UNKNOWN = -1
"""The label :meth:`Embedder.classify` gives a query of no known class (after :meth:`Embedder.calibrate`)."""


class Embedder:
    """Images in, L2-normalised embeddings out; and, for a model trained with vMF, the class posterior and the
    rejection of queries of no known class.

    Build one with :func:`load_embedder`. Embeddings are float32 unit vectors, so an inner product is a cosine.

    Args:
        model: the embedding network (put in eval mode).
        config: its :class:`EmbedderConfig`.
        class_means: ``(num_classes, embedding_size)`` vMF mean directions, or None.
        class_statistics: each class's training image count and mean resultant length (``class_counts``,
            ``resultant_lengths``, ``(num_classes,)`` each), from which each class's concentration is estimated; or
            None.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        config: EmbedderConfig,
        class_means: Optional[torch.Tensor] = None,
        class_statistics: Optional[dict] = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.class_means = F.normalize(class_means.float(), dim=1) if class_means is not None else None
        self.class_statistics = class_statistics
        self.transform: Callable = eval_transform_from_settings(config.eval_transform)

    @property
    def embedding_size(self) -> int:
        return self.config.embedding_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Union[str, torch.device]) -> Embedder:
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
    ) -> tuple[torch.Tensor, list]:
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
        loader = torch.utils.data.DataLoader(
            ImageDataset(images, self.transform), batch_size=batch_size, num_workers=num_workers
        )
        gather = None
        if accelerator is not None and accelerator.num_processes > 1:
            loader, gather = accelerator.prepare(loader), accelerator.gather_for_metrics
        show = progress and (accelerator is None or accelerator.is_local_main_process)
        embeddings, _, indices = embed_dataset(
            UnitEmbeddings(self.model), progress_bar(loader, desc=f"embedding {len(paths)} images", show=show), device=self.device,
            gather=gather, autocast=accelerator.autocast if accelerator is not None else None,
        )  # fmt: skip
        return embeddings, [str(paths[i]) for i in indices.tolist()]

    def class_model(self, kappas: Optional[str] = None) -> VMFClassModel:
        """The known classes as a vMF mixture (:class:`~pml_vmf.open_set.VMFClassModel`), with the calibrated
        temperature when :meth:`calibrate` has run.

        Args:
            kappas: ``"per_class"`` (each class's own concentration, from its spread in the training set) or
                ``"shared"`` (the loss's kappa); default: the calibration's choice, else ``"shared"``.

        Raises:
            ValueError: when the model has no vMF means and kappa, or per-class kappas are asked of a model saved
                without class statistics; the message says how to produce them.
        """
        if self.class_means is None or self.config.kappa is None:
            raise ValueError(
                f"This model was trained with {self.config.loss or 'a loss'} and has no vMF class means and kappa: "
                "class probabilities and unknown-class rejection need a model trained with loss.name=vmf "
                "(recipes/train.py saves them in the run's model folder)."
            )
        open_set = self.config.open_set or {}
        kappas = kappas or open_set.get("kappas", "shared")
        if kappas not in KAPPA_SOURCES:
            raise ValueError(f"kappas must be one of {', '.join(KAPPA_SOURCES)}, got {kappas!r}.")
        if kappas == "per_class" and self.class_statistics is None:
            raise ValueError(
                "This model folder holds no class statistics (class counts and resultant lengths), so per-class "
                "concentrations cannot be estimated: train it again with this pml-vmf (the run's model folder then "
                "has them), or use kappas='shared'."
            )
        stats = self.class_statistics or {}
        return VMFClassModel.from_statistics(
            self.class_means,
            stats.get("resultant_lengths", torch.zeros(len(self.class_means))),
            stats.get("class_counts", torch.zeros(len(self.class_means))),
            shared_kappa=self.config.kappa if kappas == "shared" else None,
            temperature=float(open_set.get("temperature", 1.0)),  # JSON may hold it as an int
        )

    def classify(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The most probable known class of each embedding and its probability under the vMF posterior: with a
        calibration (:meth:`calibrate`), its concentrations and temperature, and :data:`UNKNOWN` for a query whose
        open-set score falls below the calibrated threshold; without one, ``softmax_c(kappa * cos(z, mu_c))`` and
        no rejection.

        Returns:
            ``(labels, probabilities)``, each ``(N,)``; ``config.class_names[label]`` names a known label.

        Raises:
            ValueError: when the model was not trained with vMF (no means or kappa were exported).
        """
        model = self.class_model()
        labels, probabilities = model.predict(embeddings)
        open_set = self.config.open_set
        if open_set is not None:
            known = model.scores(embeddings)[open_set["score"]] >= float(open_set["threshold"])
            labels = torch.where(known.to(labels.device), labels, UNKNOWN)
        return labels, probabilities.float()

    def open_set_scores(self, embeddings: torch.Tensor, kappas: Optional[str] = None) -> dict:
        """Every open-set score of :data:`~pml_vmf.open_set.SCORES` per query, higher for a query that looks like a
        known class (:meth:`~pml_vmf.open_set.VMFClassModel.scores`)."""
        return self.class_model(kappas).scores(embeddings)

    def calibrate(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        *,
        tpr: float = 0.95,
        score: str = "max_cosine",
        kappas: str = "shared",
    ) -> dict:
        """Calibrates the class posterior and the unknown-class threshold on held-out images of the known classes
        (never images the model trained on, nor the queries it will judge), and records both in ``config.open_set``
        (:meth:`save` writes them to ``embedder.json``).

        The temperature minimises the negative log-likelihood of the labels; the threshold is the ``score`` above
        which a share ``tpr`` of these images lies, so that :meth:`classify` answers :data:`UNKNOWN` for about
        ``1 - tpr`` of known-class queries and, as far as the score separates them, for most of the others.

        Args:
            embeddings: ``(N, embedding_size)`` embeddings of held-out images of the known classes.
            labels: ``(N,)`` their classes.
            tpr: the share of known-class queries to accept.
            score: one of :data:`~pml_vmf.open_set.SCORES`. The default, the cosine to the nearest class mean, rejected
                held-out classes best on validation (BENCHMARKS.md, "Does vMF know what it has not seen?").
            kappas: ``"shared"`` (the loss's kappa; the default: its calibrated posterior had the lower calibration
                error on validation) or ``"per_class"`` (each class's own concentration).

        Returns:
            The ``open_set`` settings.
        """
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}.")
        model = self.class_model(kappas)
        model.temperature = 1.0
        temperature = model.calibrate(embeddings, labels)
        threshold = threshold_at_tpr(model.scores(embeddings)[score], tpr)
        if not (math.isfinite(temperature) and math.isfinite(threshold)):
            raise ValueError("The calibration gave a non-finite temperature or threshold: are the embeddings finite?")
        self.config.open_set = {
            "kappas": kappas, "temperature": temperature, "score": score, "threshold": threshold, "tpr": tpr,
            "known_images": int(len(labels)),
        }  # fmt: skip
        return dict(self.config.open_set)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The SHA-256 of the weights and the eval transform (:func:`~pml_vmf.models.model_fingerprint`): an index
        records it, so that it is searched with the model that built it."""
        return model_fingerprint(self.model, self.config.eval_transform)

    def save(self, folder: Union[str, Path], *, overwrite: bool = False) -> Path:
        """Writes the model folder (``embedder.json``, ``model.safetensors`` and, with means,
        ``class_means.safetensors``) atomically; an existing folder is replaced only with ``overwrite``."""
        return save_model_folder(
            Path(folder), self.model, self.config, self.class_means, self.class_statistics, overwrite=overwrite
        )


class UnitEmbeddings(torch.nn.Module):
    """The network with the L2 normalisation every consumer applies: it outputs unit vectors (also in exports)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).float(), dim=1)


def _as_rgb(image: Union[Image.Image, str, Path]) -> Image.Image:
    if isinstance(image, Image.Image):
        return rgb_on_white(image)
    return load_rgb(LabelledImages([Path(image)], torch.zeros(1, dtype=torch.long).numpy()), 0)


def load_embedder(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Embedder:
    """Loads an embedder from a model folder: an export (``recipes/export.py``), a run's ``model/`` folder, or a run
    folder. Only JSON and safetensors are read: nothing in the files can run code.

    Args:
        path: the model folder (holding ``embedder.json``) or a run folder.
        device: where the model runs.

    Raises:
        ModelNotFoundError: when ``path`` holds no model folder.
        UnsafeFileError: when ``path`` is a pickle file (``.pt``, ``.pkl``, ...), which is never loaded.
        DamagedFileError: when a file of the folder is missing, truncated or altered; the message names it.
    """
    path = Path(path)
    if path.is_dir() and not (path / CONFIG_FILE).is_file() and (path / RUN_MODEL_FOLDER / CONFIG_FILE).is_file():
        path = path / RUN_MODEL_FOLDER
    model, config, means = read_model_folder(path)
    return Embedder(model, config, means, read_class_statistics(path) if means is not None else None).to(device)


__all__ = ["UNKNOWN", "Embedder", "EmbedderConfig", "ModelNotFoundError", "UnitEmbeddings", "load_embedder"]

"""What a run measures: validation and test retrieval metrics, closed-set accuracy, the training set's class means,
and the run's plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator

from ..class_means import ClassMeanEstimate, compute_class_means
from ..data import RetrievalSplits, load_rgb
from ..errors import ConfigError
from ..evaluation import (
    build_accuracy_calculator,
    embed_dataset,
    has_classifier,
    nearest_mean_accuracy,
    predict_with_loss,
    retrieval_metrics,
)
from ..progress_bars import progress_bar
from ..sharding import ClassShard
from .config import RecipeConfig
from .run_folder import RunFolder

# The validation metric of the loss's own classifier (eval.select_by's choice for classification).
CLASSIFIER_ACCURACY = "classifier_accuracy"


class RunEvaluator:
    """Embeds a run's evaluation splits on every process and scores them on the main process.

    Args:
        config: the run's config (its ``eval`` section).
        accelerator: the run's accelerator (gathering, autocast).
        model: the prepared model; evaluated as it is when called (eval mode is set by the embedding loop).
        splits: the run's splits.
        loaders: ``{split name: prepared eval loader}`` for ``train``, ``query``, and ``val``/``reference`` where
            the protocol has them.
        num_classes: the training classes.

    Attributes:
        embeddings: the last embeddings and labels of each evaluated split, for the plots.
    """

    def __init__(
        self,
        config: RecipeConfig,
        accelerator: Accelerator,
        model: torch.nn.Module,
        splits: RetrievalSplits,
        loaders: dict,
        num_classes: int,
    ) -> None:
        self.config, self.accelerator, self.model = config, accelerator, model
        self.splits, self.loaders, self.num_classes = splits, loaders, num_classes
        self.device = accelerator.device
        e = config.eval
        self.calculator = build_accuracy_calculator(
            e.recall_at, e.metrics, knn=e.knn, knn_batch_size=e.knn_batch_size, device=self.device
        )
        self.embeddings: dict = {}

    def embed(self, name: str) -> tuple:
        """``(embeddings, labels, dataset indices)`` of split ``name``, every sample once, on every process."""
        return embed_dataset(
            self.model, self._with_progress(name, f"embedding the {name} split"), device=self.device,
            gather=self.accelerator.gather_for_metrics, autocast=self.accelerator.autocast,
        )  # fmt: skip

    def training_set_means(self, shard: Optional[ClassShard] = None) -> ClassMeanEstimate:
        """The class means (and their spread) of one pass over the training set: eval transforms, every sample once;
        with ``shard``, of its classes only."""
        with self.accelerator.autocast():
            return compute_class_means(
                self.model, self._with_progress("train", "vMF class means: a full pass over the training set"), self.num_classes,
                device=self.device, gather=self.accelerator.gather_for_metrics, shard=shard,
            )  # fmt: skip

    def _with_progress(self, name: str, phase: str):
        """The loader of split ``name`` behind a progress bar that names the phase, on the main process only."""
        return progress_bar(self.loaders[name], desc=phase, leave=False, show=self.accelerator.is_local_main_process)

    def evaluate(self, query_set: str = "query", reference_set: Optional[str] = None) -> dict:
        """Retrieval metrics of one split, computed on the main process and returned there (``{}`` elsewhere)."""
        query, query_labels, indices = self.embed(query_set)
        reference = reference_labels = None
        if reference_set is not None:
            reference, reference_labels, _ = self.embed(reference_set)
        self.embeddings[query_set] = (query, query_labels)
        if reference_set is not None:
            self.embeddings[reference_set] = (reference, reference_labels)
        metrics: dict = {}
        if self.accelerator.is_main_process:
            metrics = retrieval_metrics(self.calculator, query, query_labels, reference, reference_labels)
            metrics["num_query"] = len(indices)
            metrics["num_unique_query"] = len(torch.unique(indices))
        return metrics

    def validate(self, loss: torch.nn.Module) -> dict:
        """The validation metrics: retrieval on the val split and, where it holds images of the training classes
        (closed set, validated by images), ``classifier_accuracy``: the loss's own classifier (vMF's means as they
        stand, softmax's layer, the proxies) on them. Computed on the main process and returned there."""
        metrics = self.evaluate("val")
        if self.splits.val_classes_are_train_classes:
            embeddings, labels = self.embeddings["val"]
            predictions = predict_with_loss(
                loss, embeddings.to(self.device)
            )  # on every process: a sharded head needs all
            if predictions is not None and self.accelerator.is_main_process:
                metrics[CLASSIFIER_ACCURACY] = (predictions == labels).float().mean().item()
        return metrics

    def check_select_by(self, loss: torch.nn.Module) -> None:
        """Refuses ``eval.select_by=classifier_accuracy`` where it cannot be measured, before training starts.

        Raises:
            ConfigError: when the validation images are not of the training classes, or the loss has no classifier.
        """
        if self.config.eval.select_by != CLASSIFIER_ACCURACY:
            return
        if not self.splits.val_classes_are_train_classes:
            raise ConfigError(
                "eval.select_by=classifier_accuracy scores the loss's classifier on held-out images of the training "
                "classes: it needs data.protocol=closed_set (fashion_mnist or image_folder), data.val_by images or "
                f"auto, and data.val_fraction above 0 (got protocol {self.config.data.protocol}, val_by "
                f"{self.config.data.val_by}, val_fraction {self.config.data.val_fraction}). Select by a retrieval metric instead."
            )
        if not has_classifier(loss):
            raise ConfigError(
                f"eval.select_by=classifier_accuracy needs a loss that classifies (vmf, softmax, normalized_softmax, "
                f"arcface, ...); {self.config.loss.name} has no class weights. Select by mean_average_precision_at_r instead."
            )

    def test(self) -> dict:
        """The test split's retrieval metrics; the query embeddings stay for :meth:`classification_metrics`."""
        return self.evaluate("query", "reference" if self.splits.reference is not None else None)

    def classifier_accuracy(self, loss: torch.nn.Module) -> Optional[float]:
        """Closed-set accuracy of the loss's own classifier (vMF means, softmax layer, proxies) on the query
        embeddings of the last :meth:`evaluate`, or None for a loss without one."""
        query, labels = self.embeddings["query"]
        predictions = predict_with_loss(loss, query.to(self.device))
        return None if predictions is None else (predictions == labels).float().mean().item()

    def classification_metrics(self, loss: torch.nn.Module, training_means: torch.Tensor) -> dict:
        """Closed-set accuracy on the query embeddings of the last :meth:`evaluate`: ``nearest_mean_accuracy`` by
        ``training_means`` (one full pass over the training set with the tested checkpoint, for every loss) and
        ``classifier_accuracy`` by the loss's own classifier as it stands."""
        query, labels = self.embeddings["query"]
        metrics = {"nearest_mean_accuracy": nearest_mean_accuracy(query, labels, training_means.cpu())}
        accuracy = self.classifier_accuracy(loss)
        return metrics if accuracy is None else {**metrics, "classifier_accuracy": accuracy}

    def write_plots(self, run: RunFolder) -> list:
        """``plots/training_curves.png`` from the run's logs and ``plots/retrieval_grid.png`` from the last test."""
        from ..evaluation import plot_training_curves

        curves = plot_training_curves(run.read_metrics_log(), run.plots / "training_curves.png", run.read_steps_log())
        return [curves, self.write_retrieval_grid(run.plots / "retrieval_grid.png")]

    def write_retrieval_grid(self, path: Path) -> Path:
        """The top results of a few test queries of the last test, as a picture at ``path``."""
        from ..evaluation import plot_retrieval_grid

        query, query_labels = self.embeddings["query"]
        reference = reference_labels = load_reference = None
        if self.splits.reference is not None:
            reference, reference_labels = self.embeddings["reference"]
            load_reference = lambda i: load_rgb(self.splits.reference, i)  # noqa: E731
        return plot_retrieval_grid(
            query,
            query_labels,
            lambda i: load_rgb(self.splits.query, i),
            path,
            reference=reference,
            reference_labels=reference_labels,
            load_reference_image=load_reference,
            num_queries=self.config.eval.grid_queries,
            seed=self.config.run.seed,
        )


def evaluation_sets(splits: RetrievalSplits) -> dict:
    """The splits a run embeds for evaluation, by name: ``train`` (its class means), ``query``, and ``val`` and
    ``reference`` where the protocol has them."""
    sets = {"train": splits.train, "query": splits.query}
    if splits.val is not None:
        sets["val"] = splits.val
    if splits.reference is not None:
        sets["reference"] = splits.reference
    return sets

"""Evaluation: embedding a dataset on every process, PML's AccuracyCalculator with Recall@K, and plots."""

from .classification import predict_with_loss
from .embedding import embed_dataset
from .faiss_index import FaissIndexKNN
from .plots import plot_benchmark, plot_retrieval_grid, plot_search_grid, plot_training_curves, plot_tuning_curves
from .retrieval_metrics import RecallAtKCalculator, build_accuracy_calculator, nearest_mean_accuracy, retrieval_metrics

__all__ = [
    "FaissIndexKNN",
    "RecallAtKCalculator",
    "build_accuracy_calculator",
    "embed_dataset",
    "nearest_mean_accuracy",
    "plot_benchmark",
    "plot_retrieval_grid",
    "plot_search_grid",
    "plot_training_curves",
    "plot_tuning_curves",
    "predict_with_loss",
    "retrieval_metrics",
]

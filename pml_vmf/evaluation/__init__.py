"""Evaluation: embedding a dataset on every process, PML's AccuracyCalculator with Recall@K, and plots.

The plots (matplotlib, which they switch to its Agg backend) load on first use, so that embedding and metrics
do not import matplotlib.
"""

from importlib import import_module

from .classification import has_classifier, predict_with_loss
from .embedding import embed_dataset
from .faiss_index import FaissIndexKNN
from .retrieval_metrics import RecallAtKCalculator, build_accuracy_calculator, nearest_mean_accuracy, retrieval_metrics

_PLOTS = ("plot_retrieval_grid", "plot_search_grid", "plot_training_curves")


def __getattr__(name: str):
    if name in _PLOTS:
        return getattr(import_module(".plots", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FaissIndexKNN",
    "RecallAtKCalculator",
    "build_accuracy_calculator",
    "embed_dataset",
    "has_classifier",
    "nearest_mean_accuracy",
    "predict_with_loss",
    "retrieval_metrics",
    *_PLOTS,
]

"""The parts of PML that are not its public API and that pml-vmf relies on: if PML changes them, this fails first,
naming what moved (pyproject.toml pins the PML range these tests pass on)."""

import inspect

import pytorch_metric_learning
import torch

from pml_vmf.evaluation import RecallAtKCalculator
from pml_vmf.pml_api import AccuracyCalculator

METRIC_KWARGS = {
    "knn_labels",
    "query_labels",
    "not_lone_query_mask",
    "ref_includes_query",
    "label_counts",
    "label_comparison_fn",
}


def test_accuracy_calculator_internals_the_blocked_metrics_call_are_there():
    calculator = RecallAtKCalculator(
        recall_at=(1,), include=("precision_at_1", "r_precision", "mean_average_precision_at_r")
    )
    assert isinstance(calculator, AccuracyCalculator)
    functions = calculator.original_function_dict  # private: {metric name: calculate_<metric>}
    for metric in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        parameters = inspect.signature(functions[metric]).parameters
        named = {name for name, p in parameters.items() if p.kind is not p.VAR_KEYWORD}
        # Called with METRIC_KWARGS as keywords: each named parameter must be one of them, the rest go to **kwargs.
        assert named <= METRIC_KWARGS and any(p.kind is p.VAR_KEYWORD for p in parameters.values()), (
            metric,
            str(parameters),
        )
    determine_k = inspect.signature(calculator.determine_k)  # private: PML's rule for k
    assert list(determine_k.parameters) == ["bin_counts", "num_reference_embeddings", "ref_includes_query"], determine_k
    assert calculator.determine_k(torch.tensor([3, 5]), 10, False) == 10  # k=None: every reference


def test_the_tested_pml_version_is_inside_the_pinned_range():
    major, minor = (int(x) for x in pytorch_metric_learning.__version__.split(".")[:2])
    assert (major, minor) == (2, 9), (
        f"pml-vmf pins pytorch-metric-learning>=2.9,<2.10; {pytorch_metric_learning.__version__} is installed"
    )

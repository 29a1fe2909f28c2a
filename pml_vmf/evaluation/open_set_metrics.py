"""The measures of the out-of-distribution literature (OpenOOD): how well a score separates queries of known classes
from queries of unknown ones, and how well class probabilities are calibrated."""

from __future__ import annotations

import numpy as np
import torch


def _known_and_unknown(known_scores: torch.Tensor, unknown_scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    known = known_scores.detach().double().flatten().cpu().numpy()
    unknown = unknown_scores.detach().double().flatten().cpu().numpy()
    if known.size == 0 or unknown.size == 0:
        raise ValueError("Open-set measures need scores of both known-class and unknown-class queries.")
    if not (np.isfinite(known).all() and np.isfinite(unknown).all()):
        raise ValueError("Open-set scores must be finite (a query of NaN embeddings?).")
    return known, unknown


def auroc(known_scores: torch.Tensor, unknown_scores: torch.Tensor) -> float:
    """Area under the ROC curve of telling known from unknown by the score (known = positive, higher score = more
    known): the probability that a random known query outscores a random unknown one, ties counting half."""
    from sklearn.metrics import roc_auc_score

    known, unknown = _known_and_unknown(known_scores, unknown_scores)
    truth = np.concatenate([np.ones(known.size), np.zeros(unknown.size)])
    return float(roc_auc_score(truth, np.concatenate([known, unknown])))


def fpr_at_tpr(known_scores: torch.Tensor, unknown_scores: torch.Tensor, tpr: float = 0.95) -> float:
    """The share of unknown queries accepted at the threshold that accepts a share ``tpr`` of the known ones
    (FPR@95%TPR at the default): the lowest false-positive rate of any threshold whose true-positive rate reaches
    ``tpr``."""
    from sklearn.metrics import roc_curve

    known, unknown = _known_and_unknown(known_scores, unknown_scores)
    truth = np.concatenate([np.ones(known.size), np.zeros(unknown.size)])
    fpr, true_positive_rate, _ = roc_curve(truth, np.concatenate([known, unknown]), drop_intermediate=False)
    return float(fpr[np.searchsorted(true_positive_rate, tpr, side="left")])


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, num_bins: int = 15) -> float:
    """ECE (Guo et al., ICML 2017): the confidence (top class probability) cut into ``num_bins`` equal-width bins;
    the mean over queries of ``|accuracy - confidence|`` of their bin.

    Args:
        probabilities: ``(N, C)`` class probabilities.
        labels: ``(N,)`` true classes.
    """
    confidence, predicted = probabilities.detach().double().max(dim=1)
    correct = (predicted == labels.to(predicted.device)).double()
    bins = torch.clamp((confidence * num_bins).ceil().long() - 1, 0, num_bins - 1)
    total = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins.cpu(), torch.ones_like(confidence).cpu())
    gap = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins.cpu(), (correct - confidence).cpu())
    return float(gap.abs().sum() / total.sum())


def negative_log_likelihood(log_probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean of ``-log p(true class)`` over queries."""
    return float(
        -log_probabilities.detach().double().gather(1, labels.long().to(log_probabilities.device)[:, None]).mean()
    )

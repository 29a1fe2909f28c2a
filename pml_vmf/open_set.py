"""The classes as a vMF mixture: class posteriors with each class's own concentration, their calibration, and the
rejection of queries of no known class.

A model trained with ``VMFLoss`` holds a mean direction per class; the mean resultant length of each class's unit
embeddings gives its own concentration (how tightly its images gather), so a query has a likelihood under every
class, ``log f(z | c) = log C_p(kappa_c) + kappa_c mu_c . z``, not only an angle. The largest of them scores how
well the query fits any known class (low: of no class the model knows); the posterior over classes, with a
temperature fitted on held-out images of the known classes, gives calibrated class probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .class_means import estimate_concentration
from .vmf_density import log_vmf_normaliser

SCORES = ("vmf_log_likelihood", "vmf_max_posterior", "max_cosine")
"""The open-set scores :meth:`VMFClassModel.scores` returns, each higher for a query that looks known."""
KAPPA_SOURCES = ("per_class", "shared")
"""Where a :class:`VMFClassModel`'s concentrations come from: each class's own spread, or the loss's one kappa."""


def class_concentrations(resultant_lengths: torch.Tensor, counts: torch.Tensor, dim: int) -> torch.Tensor:
    """Each class's vMF concentration from its mean resultant length ``R`` over ``n`` unit embeddings.

    ``R`` of few samples is biased upwards (``n`` random directions in 128 dimensions have ``R`` about
    ``1 / sqrt(n)``, not 0), which would make classes of few images look tight. The squared length is corrected first,
    ``(n R^2 - 1) / (n - 1)``, which is unbiased for the squared length of the class's true mean vector; Banerjee et al.'s
    approximation then gives kappa. A class of fewer than 2 samples, or whose corrected length is not positive, gets
    the pooled concentration of all classes (the corrected lengths averaged with weights ``n - 1``).

    Args:
        resultant_lengths: ``(C,)`` mean resultant lengths (NaN for classes without samples).
        counts: ``(C,)`` sample counts.
        dim: the embedding width.

    Returns:
        ``(C,)`` float64 concentrations, finite and positive (capped at ``1e6``: samples that coincide).
    """
    n = counts.double()
    r = torch.nan_to_num(resultant_lengths.double(), nan=0.0).clamp(0.0, 1.0)
    usable = n >= 2
    corrected = torch.where(usable, (n * r * r - 1.0) / (n - 1.0).clamp_min(1.0), 0.0)
    weights = torch.where(usable, n - 1.0, 0.0)
    if float(weights.sum()) > 0:
        pooled_sq = float((weights * corrected).sum() / weights.sum())
    else:
        pooled_sq = 0.0
    pooled = estimate_concentration(torch.tensor(math.sqrt(min(max(pooled_sq, 1e-12), 1.0))), dim)
    own = estimate_concentration(corrected.clamp(1e-12, 1.0).sqrt(), dim)
    kappas = torch.where(usable & (corrected > 0), own, pooled)
    return kappas.clamp(1e-6, 1e6)


@dataclass
class VMFClassModel:
    """Each known class ``c`` a ``vMF(mu_c, kappa_c)`` on the unit sphere, with equal priors.

    Build one from a trained model's saved statistics (:func:`~pml_vmf.load_embedder` does), or from a
    :class:`~pml_vmf.ClassMeanEstimate` with :meth:`from_estimate`.

    Attributes:
        means: ``(C, d)`` mean directions; a row of zeros is a class without a mean (never predicted).
        kappas: ``(C,)`` concentrations: each class's own, or one shared value repeated (the loss's kappa).
        temperature: divides the log-likelihoods before the softmax over classes (1: the model as estimated);
            :meth:`calibrate` fits it on held-out images of the known classes.
    """

    means: torch.Tensor
    kappas: torch.Tensor
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.means.dim() != 2 or self.kappas.shape != (self.means.shape[0],):
            raise ValueError(
                f"VMFClassModel needs means (C, d) and kappas (C,), got {tuple(self.means.shape)} and "
                f"{tuple(self.kappas.shape)}."
            )
        if not bool(torch.isfinite(self.kappas).all() and (self.kappas > 0).all()):
            raise ValueError("VMFClassModel concentrations must be finite and positive.")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"VMFClassModel temperature must be finite and positive, got {self.temperature}.")
        self.means = F.normalize(self.means.double(), dim=1)
        self.kappas = self.kappas.double()

    @classmethod
    def from_statistics(
        cls,
        means: torch.Tensor,
        resultant_lengths: torch.Tensor,
        counts: torch.Tensor,
        *,
        shared_kappa: Optional[float] = None,
        temperature: float = 1.0,
    ) -> VMFClassModel:
        """Per-class concentrations from each class's resultant length and count (:func:`class_concentrations`),
        or one ``shared_kappa`` for every class."""
        if shared_kappa is not None:
            kappas = torch.full((means.shape[0],), float(shared_kappa), dtype=torch.float64)
        else:
            kappas = class_concentrations(resultant_lengths, counts, means.shape[1])
        return cls(means, kappas, temperature)

    @classmethod
    def from_estimate(cls, estimate, **kwargs) -> VMFClassModel:
        """From a :class:`~pml_vmf.ClassMeanEstimate` (a full pass, or ``GlobalMeanMiner.update_means``)."""
        return cls.from_statistics(estimate.means, estimate.resultant_lengths, estimate.counts, **kwargs)

    @property
    def has_mean(self) -> torch.Tensor:
        return self.means.ne(0).any(dim=1)

    def log_likelihoods(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` float64: ``log f(z | c) = log C_p(kappa_c) + kappa_c cos(z, mu_c)``, ``-inf`` for classes
        without a mean."""
        z = F.normalize(embeddings.double(), dim=1).to(self.means.device)
        log_c = log_vmf_normaliser(self.kappas, self.means.shape[1]).to(self.means.device)
        return (log_c + self.kappas * (z @ self.means.T)).masked_fill(~self.has_mean, -torch.inf)

    def log_posterior(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` float64 log class probabilities, ``log_softmax(log f(z | c) / temperature)``."""
        return torch.log_softmax(self.log_likelihoods(embeddings) / self.temperature, dim=1)

    def predict(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, probabilities)``: the most probable class of each query and its posterior probability."""
        log_p = self.log_posterior(embeddings)
        best, labels = log_p.max(dim=1)
        return labels, best.exp()

    def scores(self, embeddings: torch.Tensor) -> dict:
        """Open-set scores, ``(N,)`` float64 each, higher for a query that looks like a known class:
        ``vmf_log_likelihood`` (``max_c log f(z | c)``, the density of the best class), ``vmf_max_posterior`` (the
        largest class probability) and ``max_cosine`` (to the nearest mean; what a shared kappa ranks by)."""
        log_likelihoods = self.log_likelihoods(embeddings)
        z = F.normalize(embeddings.double(), dim=1).to(self.means.device)
        cosines = (z @ self.means.T).masked_fill(~self.has_mean, -torch.inf)
        return {
            "vmf_log_likelihood": log_likelihoods.max(dim=1).values,
            "vmf_max_posterior": torch.softmax(log_likelihoods / self.temperature, dim=1).max(dim=1).values,
            "max_cosine": cosines.max(dim=1).values,
        }

    def calibrate(self, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
        """Fits the temperature that minimises the negative log-likelihood of ``labels`` on held-out images of
        the known classes (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017), sets it and
        returns it.

        Raises:
            ValueError: for no embeddings, or labels of classes without a mean.
        """
        labels = labels.long().to(self.means.device)
        if labels.numel() == 0:
            raise ValueError("VMFClassModel.calibrate needs held-out embeddings of the known classes; got none.")
        if bool((labels < 0).any() or (labels >= self.means.shape[0]).any()) or not bool(self.has_mean[labels].all()):
            raise ValueError("VMFClassModel.calibrate: every label must be a known class that has a mean.")
        self.temperature = fit_temperature(self.log_likelihoods(embeddings), labels)
        return self.temperature


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple = (1e-4, 1e4)) -> float:
    """The temperature ``T`` minimising the negative log-likelihood of ``labels`` under ``softmax(logits / T)``,
    with one pseudo-observation spread evenly over the classes (label smoothing ``1 / (N + 1)``, Laplace's rule):
    a calibration set the posterior already separates would otherwise drive ``T`` to 0 and the probabilities to 0 and
    1. Found by golden-section search on ``log T`` (the loss is convex in ``1 / T``, hence unimodal in ``log T``).
    Columns that are ``-inf`` throughout (classes without a mean) are left out."""
    logits, labels = logits.detach().double(), labels.long().to(logits.device)
    columns = torch.isfinite(logits).any(dim=0)
    labels = (torch.cumsum(columns.long(), 0) - 1)[labels]
    logits = logits[:, columns]
    smoothing = 1.0 / (len(labels) + 1)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels, label_smoothing=smoothing))

    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(90):  # the bracket shrinks by 0.618 a step: far below float64's resolution of log T
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return math.exp((low + high) / 2.0)


def threshold_at_tpr(known_scores: torch.Tensor, tpr: float = 0.95) -> float:
    """The score above which a share ``tpr`` of known-class queries lies: queries below it are answered "unknown".
    Choose it on held-out images of the known classes, never on the queries it will judge."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr is the share of known-class queries to accept, in (0, 1]; got {tpr}.")
    scores = known_scores.double().flatten()
    scores = scores[torch.isfinite(scores)]
    if scores.numel() == 0:
        raise ValueError("threshold_at_tpr needs finite scores of known-class queries; got none.")
    accepted = math.ceil(tpr * scores.numel() - 1e-9)  # the fewest known queries that make the share
    return float(scores.sort().values[scores.numel() - accepted])

"""How ``VMFLoss`` sets its shared concentration kappa: a number, the class count's scale, or a scale that adapts.

``"auto"`` is the fixed scale of AdaCos (Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively
Learning Deep Face Representations", CVPR 2019), ``sqrt(2) * ln(C - 1)`` for ``C`` classes: the scale at which a
sample at 45 degrees from its own class mean still gets a non-vanishing gradient while the other ``C - 1`` classes
sit at 90 degrees. The formula degenerates for a handful of classes (0 for two classes), so it is floored.

``"adaptive"`` is AdaCos's dynamic scale, recomputed after every training step from the batch itself,
``log(B_avg) / cos(min(pi/4, theta_med))``: ``B_avg`` is the mean over samples of the summed ``exp(kappa cos)`` of
the other classes at the current kappa, ``theta_med`` the median angle between a sample and its own class mean. Under
``torch.distributed`` the sums and a histogram of the angles are all-reduced, so every process holds the same kappa
whatever the split of the global batch.
"""

from __future__ import annotations

import math
from typing import Union

import torch

from .distributed import all_reduce_sum_

KappaSetting = Union[float, str]
KAPPA_MODES = ("auto", "adaptive")
MIN_AUTO_KAPPA = 2.0
"""The floor of ``"auto"``: the scale of 4 classes. Chosen on validation images of the class-disjoint digits split
(5 training classes, AdaCos 1.96): see BENCHMARKS.md, "What do the defaults give?"."""
MAX_ADAPTIVE_KAPPA = 64.0  # the top of the range the cosine-softmax literature uses; keeps exp() finite in fp32
_ANGLE_BINS = 4096  # the median angle's resolution: pi / 4096 rad, 0.04 degrees


def class_count_kappa(num_classes: int) -> float:
    """AdaCos's fixed scale ``sqrt(2) * ln(C - 1)`` for ``num_classes`` classes, at least :data:`MIN_AUTO_KAPPA`.

    Example: 10 classes give 3.11, 500 give 8.79, a million 19.54.
    """
    return max(math.sqrt(2.0) * math.log(max(num_classes - 1, 1)), MIN_AUTO_KAPPA)


def parse_kappa(kappa: KappaSetting) -> "tuple[str, float | None]":
    """``(mode, value)`` of a ``VMFLoss(kappa=...)`` setting: ``("fixed", 16.0)``, ``("auto", None)``,
    ``("adaptive", None)``.

    Raises:
        ValueError: for any other string, or a number that is not finite and positive.
    """
    if isinstance(kappa, str):
        name = kappa.strip().lower()
        if name in KAPPA_MODES:
            return name, None
        try:
            kappa = float(name)
        except ValueError:
            raise ValueError(f"kappa must be a positive number, 'auto' or 'adaptive', got {kappa!r}.") from None
    if isinstance(kappa, bool):
        raise ValueError(f"kappa must be a positive number, 'auto' or 'adaptive', got {kappa!r}.")
    try:
        value = float(kappa)
    except (TypeError, ValueError):
        raise ValueError(f"kappa must be a positive number, 'auto' or 'adaptive', got {kappa!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"kappa must be finite and > 0 (typical values 2 to 64), or 'auto', got {kappa!r}.")
    return "fixed", value


@torch.no_grad()
def adaptive_kappa(cosines: torch.Tensor, targets: torch.Tensor, has_mean: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """AdaCos's dynamic scale from one (global) batch.

    Args:
        cosines: ``(N, C)`` cosines between the samples and the class means (any value where a class has no mean).
        targets: ``(N,)`` each sample's column in ``cosines``.
        has_mean: ``(C,)`` bool, the columns that hold a mean.
        kappa: the current kappa (a 0-d tensor): ``B_avg`` is measured at it.

    Returns:
        The new kappa, a 0-d float32 tensor on ``cosines``' device, clamped to ``[MIN_AUTO_KAPPA,
        MAX_ADAPTIVE_KAPPA]`` (AdaCos's formula turns negative when the other classes' summed weight is below 1,
        which happens with a handful of classes). Unchanged when no process saw a sample.
    """
    cosines = cosines.float()
    rows = torch.arange(cosines.shape[0], device=cosines.device)
    others = has_mean[None, :].expand_as(cosines).clone()
    others[rows, targets] = False
    weights = torch.where(others, torch.exp(kappa.float() * cosines), 0.0)
    angles = torch.arccos(cosines[rows, targets].clamp(-1.0, 1.0))
    histogram = torch.histc(angles, bins=_ANGLE_BINS, min=0.0, max=math.pi)
    totals = torch.stack([weights.sum(), torch.tensor(float(cosines.shape[0]), device=cosines.device)])
    all_reduce_sum_(totals, histogram)
    median_bin = torch.searchsorted(histogram.cumsum(0), totals[1] / 2).clamp(max=_ANGLE_BINS - 1)
    median_angle = (median_bin.float() + 0.5) * (math.pi / _ANGLE_BINS)
    b_avg = totals[0] / totals[1]
    new = torch.log(b_avg.clamp_min(1e-12)) / torch.cos(median_angle.clamp(max=math.pi / 4))
    # A select, not a branch on the count: reading it back would stall the device every step.
    return torch.where(totals[1] > 0, new.clamp(MIN_AUTO_KAPPA, MAX_ADAPTIVE_KAPPA), kappa.float())

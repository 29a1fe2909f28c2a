"""The von Mises-Fisher density on the unit sphere ``S^{p-1}``, with its normalising constant, for large kappa and p.

``f(z; mu, kappa) = C_p(kappa) exp(kappa mu.z)`` with ``C_p(kappa) = kappa^{p/2-1} / ((2 pi)^{p/2} I_{p/2-1}(kappa))``.
The modified Bessel function ``I_v`` over- or underflows float64 long before the embeddings of metric learning are
unusual (``I_63(1)`` is about ``1e-106``, ``I_63(1000)`` about ``1e432``), so everything here is computed as a logarithm:
scipy's exponentially scaled ``ive`` where its value is a normal float64, and the uniform asymptotic expansion of
Debye (DLMF 10.41.3, four terms) where ``ive`` underflows, which happens only for large orders, where that expansion
is accurate to about 1e-10 relative (checked against mpmath in the tests).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# DLMF 10.41.10: the polynomials u_k(t) of the uniform expansion, coefficients of t^0, t^1, ... .
_DEBYE_U = (
    (1.0,),
    (0.0, 1 / 8, 0.0, -5 / 24),
    (0.0, 0.0, 9 / 128, 0.0, -77 / 192, 0.0, 385 / 1152),
    (0.0, 0.0, 0.0, 75 / 1024, 0.0, -4563 / 5120, 0.0, 17017 / 9216, 0.0, -85085 / 82944),
    (0.0, 0.0, 0.0, 0.0, 3675 / 32768, 0.0, -96833 / 40960, 0.0, 144001 / 16384, 0.0, -7436429 / 663552, 0.0,
     37182145 / 7962624),
)  # fmt: skip
_SMALLEST_NORMAL = torch.finfo(torch.float64).tiny


def log_bessel_iv(order: float, x: torch.Tensor) -> torch.Tensor:
    """``log I_order(x)`` for ``x > 0``, in float64, finite wherever the logarithm is.

    Args:
        order: the order ``v >= 0`` (``p / 2 - 1`` for the vMF on ``S^{p-1}``).
        x: positive arguments, any shape.
    """
    from scipy.special import ive  # scipy comes with scikit-learn, which pytorch-metric-learning requires

    if not (math.isfinite(order) and order >= 0):
        raise ValueError(f"log_bessel_iv needs a finite order >= 0, got {order}.")
    x64 = x.detach().double().cpu()
    scaled = torch.from_numpy(np.asarray(ive(order, x64.numpy()), dtype=np.float64))  # I_v(x) e^{-x}
    usable = scaled > _SMALLEST_NORMAL
    result = torch.where(usable, torch.log(scaled.clamp_min(_SMALLEST_NORMAL)) + x64, torch.nan)
    if not bool(usable.all()):
        result = torch.where(usable, result, _debye_log_iv(order, x64))
    return result.to(x.device)


def _debye_log_iv(order: float, x: torch.Tensor) -> torch.Tensor:
    """Debye's uniform asymptotic expansion of ``log I_v(x)`` in ``1 / v`` (DLMF 10.41.3), for large ``v``."""
    v = max(order, 1e-300)
    z = x / v
    root = torch.sqrt(1.0 + z * z)
    eta = root + torch.log(z / (1.0 + root))
    t = 1.0 / root
    series = torch.zeros_like(x)
    for k, coefficients in enumerate(_DEBYE_U):
        series = series + sum(c * t**i for i, c in enumerate(coefficients) if c) / v**k
    return v * eta - 0.5 * torch.log(2.0 * math.pi * v * root) + torch.log(series)


def log_vmf_normaliser(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """``log C_p(kappa)`` of the vMF density on the unit sphere of ``R^dim``, float64; ``kappa -> 0`` gives the
    uniform density's ``-log(area of S^{dim-1})``.

    Args:
        kappa: concentrations ``>= 0``, any shape.
        dim: the ambient dimension ``p`` (the embedding width), at least 2.
    """
    if dim < 2:
        raise ValueError(f"The vMF density needs an embedding width of at least 2, got {dim}.")
    kappa = kappa.double()
    order = dim / 2 - 1
    log_area = math.log(2.0) + (dim / 2) * math.log(math.pi) - math.lgamma(dim / 2)
    positive = kappa > 0
    safe = torch.where(positive, kappa, 1.0)
    log_c = order * torch.log(safe) - (dim / 2) * math.log(2 * math.pi) - log_bessel_iv(order, safe)
    return torch.where(positive, log_c, -log_area)

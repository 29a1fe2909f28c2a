"""How ``VMFLoss`` sets its shared concentration kappa: a number, or ``"auto"``, a scale from the class count.

``"auto"`` is the fixed scale of AdaCos (Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively
Learning Deep Face Representations", CVPR 2019), ``sqrt(2) * ln(C - 1)`` for ``C`` classes: the scale at which a
sample at 45 degrees from its own class mean still gets a useful gradient while the other ``C - 1`` classes sit at
90 degrees. The formula falls to 0 at two classes, so it is floored at its value for five.
"""

from __future__ import annotations

import math
from typing import Union

KappaSetting = Union[float, str]
MIN_AUTO_KAPPA = 2.0
"""The floor of ``"auto"``: about the formula's value at 5 classes (1.96). With 2 to 4 classes it gives 0 to 1.55,
below any scale a cosine softmax trains with."""


def class_count_kappa(num_classes: int) -> float:
    """AdaCos's fixed scale ``sqrt(2) * ln(C - 1)`` for ``num_classes`` classes, at least :data:`MIN_AUTO_KAPPA`.

    Example: 10 classes give 3.11, 500 give 8.79, a million 19.54.
    """
    return max(math.sqrt(2.0) * math.log(max(num_classes - 1, 1)), MIN_AUTO_KAPPA)


def parse_kappa(kappa: KappaSetting) -> float | None:
    """The number of a ``VMFLoss(kappa=...)`` setting, or None for ``"auto"``.

    Raises:
        ValueError: for any other string, or a number that is not finite and positive.
    """
    if isinstance(kappa, str):
        if kappa.strip().lower() == "auto":
            return None
        try:
            kappa = float(kappa)
        except ValueError:
            raise ValueError(f"kappa must be a positive number or 'auto', got {kappa!r}.") from None
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)):
        raise ValueError(f"kappa must be a positive number or 'auto', got {kappa!r}.")
    value = float(kappa)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"kappa must be finite and > 0 (typical values 2 to 64), or 'auto', got {kappa!r}.")
    return value

"""Ramp-up and ramp-down weights of consistency terms, as exact functions of training progress."""
from __future__ import annotations

import math


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Laine & Aila (2017), used by Mean Teacher and SSL4MIS: ``exp(-5 (1 - t)^2)``, ``t = current / length``
    clipped to [0, 1]; 1 once the ramp is over."""
    if rampup_length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), rampup_length) / rampup_length
    return float(math.exp(-5.0 * phase * phase))


def linear_rampup(current: float, rampup_length: float) -> float:
    if rampup_length == 0:
        return 1.0
    return float(min(max(current, 0.0), rampup_length) / rampup_length)


def exponential_rampdown(fraction: float) -> float:
    """``exp(-5 t)`` for ``t`` in [0, 1] (SemiSAM Eq. 3 without its 0.1 scale)."""
    return float(math.exp(-5.0 * min(max(fraction, 0.0), 1.0)))

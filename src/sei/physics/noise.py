"""The noise model's facts: Gaussian noise, its level in 8-bit units, ``auto`` for an estimated level."""

from __future__ import annotations

import math

from sei.errors import SeiUserError

DEFAULT_NOISE_LEVEL = 5.0  # the paper's std in 8-bit units (sigma = 5/255)
AUTO = "auto"


def parse_noise_level(text: str | float) -> float | str:
    """``--noise_level``: a std in 8-bit units (>= 0) or ``auto`` (estimated from the measurements).

    >>> parse_noise_level("5"), parse_noise_level("AUTO")
    (5.0, 'auto')
    """
    if str(text).strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise SeiUserError(f"--noise_level takes a number (the std in 8-bit units) or 'auto', got {text!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise SeiUserError(f"the noise level must be a finite number >= 0, got {text!r}")
    return value

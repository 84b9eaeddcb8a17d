r"""The noise model's facts: its names, units, defaults, how to draw it and how large it is.

Two models, both on images in [0, 1]:

- ``gaussian``: :math:`y = Ax + n`, :math:`n \sim \mathcal{N}(0, \sigma^2)`.
- ``poisson-gaussian``: :math:`y = \gamma\, \mathcal{P}(Ax / \gamma) + n`, the photon-limited model of
  microscopy, astronomy and low-light cameras; its variance grows with the signal,
  :math:`\operatorname{Var} y_i = \gamma (Ax)_i + \sigma^2`. Poisson noise alone is the case :math:`\sigma =
  0`.

Both levels are given in 8-bit units, the scale the images are shown in: ``--noise_level S`` is
:math:`\sigma = S / 255` and ``--gain G`` is :math:`\gamma = G / 255`, the intensity of one photon
(one count) in 8-bit units. A pixel at full scale (1.0) then collects ``255 / G`` photons on average:
``--gain 2.55`` is a peak of 100 photons, ``--gain 25.5`` a peak of 10.
"""

from __future__ import annotations

import math

import torch

from sei.errors import SeiUserError
from sei.problem import DEFAULT_NOISE_MODEL, GAUSSIAN, NOISE_MODELS  # the names are the problem's facts

AUTO = "auto"
INTENSITY_SCALE = 255.0  # levels and gains are given in 8-bit units: value / 255 on images in [0, 1]
NEGATIVE_TOLERANCE = 1e-6  # below this an intensity under Poisson noise is a user error, not rounding
# a Poisson-Gaussian measurement dips below 0 only by its Gaussian part: values under -(5 sigma + 1/255) in
# more than 0.1 % of the pixels (3e-7 of them would, at a zero signal) say the data carry an offset
NEGATIVE_MEASUREMENT_SIGMAS = 5.0
NEGATIVE_MEASUREMENT_SHARE = 1e-3


def _number_or_auto(text: str | float, usage: str) -> float | str:
    """``auto`` (any case), or ``text`` as a float; a one-line error with ``usage`` otherwise."""
    if str(text).strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise SeiUserError(f"{usage}, got {text!r}") from None


def parse_noise_level(text: str | float) -> float | str:
    """``--noise_level``: a std in 8-bit units (>= 0) or ``auto`` (estimated from the measurements).

    >>> parse_noise_level("5"), parse_noise_level("AUTO")
    (5.0, 'auto')
    """
    value = _number_or_auto(text, "--noise_level takes a number (the std in 8-bit units) or 'auto'")
    if value == AUTO:
        return AUTO
    if not value >= 0 or not math.isfinite(value):
        raise SeiUserError(f"the noise level must be a finite number >= 0, got {text!r}")
    return value


def parse_gain(text: str | float) -> float | str:
    """``--gain``: the Poisson gain in 8-bit units (> 0: one photon's intensity) or ``auto``.

    >>> parse_gain("2.55"), parse_gain("auto")
    (2.55, 'auto')
    """
    value = _number_or_auto(text, "--gain takes a number (one photon's intensity in 8-bit units) or 'auto'")
    if value == AUTO:
        return AUTO
    check_gain(value)
    return value


def check_gain(gain: float) -> float:
    """A Poisson gain must be finite and > 0 (8-bit units)."""
    if gain is None or not math.isfinite(float(gain)) or float(gain) <= 0:
        raise SeiUserError(f"the Poisson gain must be a finite number > 0 (8-bit units), got {gain}")
    return float(gain)


def check_noise_model(name: str, gain: float | None) -> tuple[str, float]:
    """Validate a (model, gain in 8-bit units) pair; returns the canonical name and the gain (0 for Gaussian).

    >>> check_noise_model("Poisson-Gaussian", 2.55)
    ('poisson-gaussian', 2.55)
    """
    canonical = str(name or DEFAULT_NOISE_MODEL).strip().lower()
    if canonical not in NOISE_MODELS:
        raise SeiUserError(f"unknown noise model {name!r}: choose one of {', '.join(NOISE_MODELS)}")
    if canonical == GAUSSIAN:
        if gain not in (None, 0, 0.0):
            raise SeiUserError("--gain applies to --noise poisson-gaussian only (Gaussian noise has no gain)")
        return canonical, 0.0
    if gain is None:
        raise SeiUserError(
            "--noise poisson-gaussian needs --gain (one photon's intensity in 8-bit units, e.g. 2.55 "
            "for a peak of 100 photons)"
        )
    return canonical, check_gain(gain)


def peak_photons(gain_level: float) -> float:
    """Mean photon count of a full-scale pixel (1.0) at this gain (8-bit units).

    >>> round(peak_photons(2.55), 6)
    100.0
    """
    return INTENSITY_SCALE / check_gain(gain_level)


def check_nonnegative(x: torch.Tensor, what: str = "the image") -> None:
    """Poisson noise counts photons: a clearly negative intensity is a user error (one line)."""
    low = float(x.min()) if x.numel() else 0.0
    if low < -NEGATIVE_TOLERANCE:
        raise SeiUserError(
            f"Poisson noise needs intensities >= 0, but {what} has values down to {low:.4g}; "
            "use Gaussian noise or offset the data"
        )


def check_measurements_nonnegative(
    measurements: list[torch.Tensor] | torch.Tensor, noise_level: float, what: str = "the measurements"
) -> None:
    """Poisson-Gaussian measurements are ``gain * counts + N(0, sigma^2)`` with counts >= 0: they go below 0
    only by the Gaussian part. More than 0.1 % of the values under ``-(5 sigma + 1/255)`` (``noise_level`` is
    sigma in 8-bit units) mean an offset or a background subtraction: a one-line error."""
    values = torch.cat([y.detach().flatten().float().cpu() for y in measurements])
    floor = -(NEGATIVE_MEASUREMENT_SIGMAS * float(noise_level) + 1.0) / INTENSITY_SCALE
    share = float((values < floor).float().mean()) if values.numel() else 0.0
    if share > NEGATIVE_MEASUREMENT_SHARE:
        raise SeiUserError(
            f"Poisson noise needs intensities >= 0, but {100 * share:.2g} % of {what} lie below {floor:.3g} "
            f"(down to {float(values.min()):.3g}), more than a noise level of {noise_level:.3g} explains; "
            "remove the offset (add the camera's pedestal back) or use --noise gaussian"
        )


def poisson_gaussian_sample(
    clean: torch.Tensor,
    sigma: float,
    gain: float,
    rng: torch.Generator | None = None,
    gaussian: torch.Tensor | None = None,
) -> torch.Tensor:
    r""":math:`\gamma\,\mathcal{P}(\max(u, 0)/\gamma) + \sigma n` for the noiseless measurement :math:`u`
    (``gain`` :math:`\gamma` and ``sigma`` in [0, 1] units). Negative rates (the small undershoot of bicubic
    downsampling, a network's estimate re-measured in training) count as zero photons. The counts are
    drawn with ``rng`` on its device (torch's global RNG when ``None``), then the Gaussian part; pass
    ``gaussian`` (standard normal, shaped like ``clean``) to use a given draw."""
    rates = clean.detach().float().clamp_min(0) / gain
    if rng is None:
        counts = torch.poisson(rates)
    else:
        counts = torch.poisson(rates.to(rng.device), generator=rng).to(clean.device)
    noisy = (gain * counts).to(clean.dtype)
    if clean.requires_grad:  # keep a path to the clean signal (its expectation), for callers that need one
        noisy = clean + (noisy - clean).detach()
    if sigma == 0:
        return noisy
    if gaussian is None:
        if rng is None:
            gaussian = torch.randn_like(clean)
        else:
            gaussian = torch.randn(clean.shape, generator=rng, device=rng.device, dtype=clean.dtype).to(
                clean.device
            )
    return noisy + sigma * gaussian


def noise_variance(y: torch.Tensor, sigma: float, gain: float) -> torch.Tensor | float:
    r"""Unbiased per-pixel estimate of the noise variance from the measurement itself:
    :math:`\gamma y + \sigma^2` (its expectation is :math:`\gamma (Ax) + \sigma^2`); :math:`\sigma^2` for
    Gaussian noise (``gain == 0``)."""
    if gain == 0:
        return float(sigma) ** 2
    return gain * y + float(sigma) ** 2

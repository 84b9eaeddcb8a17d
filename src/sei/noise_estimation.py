r"""Estimate the Gaussian noise level of measurements from the measurements alone.

SURE needs the noise std :math:`\sigma` of :math:`y = A x + n`; users rarely know it, and a wrong value
biases SURE. :func:`estimate_noise_level` estimates it with one of four estimators:

``spectral`` (physics-aware, blur only)
    A blur removes the high frequencies of the scene, so where :math:`|\mathrm{OTF}|` is about 0 the
    spectrum of :math:`y` is noise alone. The measurement is cut into overlapping Hann-windowed tiles
    (the window stops the border discontinuity of a non-circular, 'valid' measurement from leaking into
    those frequencies); the periodogram values at the noise-only frequencies are, for white noise,
    :math:`\sigma^2` times a unit exponential, so :math:`\hat\sigma^2 = \mathrm{median} / \ln 2`.
``pca`` (Chen, Zhu and Heng, ICCV 2015)
    Eigenvalues of the covariance of 5x5 patches taken across all channels at once: the smallest ones
    are noise; :math:`\hat\sigma^2` is the mean of the largest set of smallest eigenvalues whose mean is
    not above their median. (Per-channel patches failed on sharp super-resolution measurements: with
    no colour redundancy every direction carries signal.)
``weak_texture`` (Liu, Tanaka and Okutomi, 2013, with Chen's eigenvalue rule)
    The same, restricted to weak-texture patches, those whose gradient energy is below the 99 %
    quantile of the energy of pure noise at the current estimate, iterated to a fixed point.
``mad`` (Donoho and Johnstone, 1994)
    Median absolute value of the finest diagonal Haar band, divided by 0.6745.

``auto`` picks ``spectral`` for a blur that leaves enough noise-only frequencies and ``pca``
otherwise (super-resolution, no physics, a weak blur), and ``pca`` also for a blurred image none of
whose tiles is free of clipped pixels (``method`` then reads ``spectral+pca`` or ``pca``). The choice
was made by measuring the estimators on the *training* photographs of ``samples``;
``benchmarks/noise_estimation.py`` reports the test photographs (docs/noise_level.md has the table).

Two properties of real files are handled: pixels clipped at 0 or 1 carry less noise, so patches and
tiles that contain them are left out; and an 8-bit measurement (every value a multiple of 1/255)
carries a uniform rounding error of variance 1/12 (in 8-bit units), which is subtracted, so that the
level returned is the Gaussian ``--noise_level`` that made the measurement.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sei.errors import SeiUserError

if TYPE_CHECKING:
    from sei.physics import Operator

METHODS = ("auto", "spectral", "pca", "weak_texture", "mad")
MIN_SIDE = 16  # smallest height / width an image may have
MIN_PIXELS = 1024  # and smallest number of pixels (per channel)
PATCH = 5  # patch side of the PCA estimators (5 beat 7 on the training photographs)
MAX_PATCHES = 200_000  # per image and channel; the stride grows beyond
TILE = 128  # spectral tile side (smaller images use their own size)
OTF_THRESHOLD = 0.01  # |OTF| below which a frequency counts as noise only
MIN_NOISE_FREQUENCIES = 200  # fewer than this per tile: the blur is too weak for ``spectral``
QUANTISATION_VARIANCE = 1.0 / 12.0  # of rounding to integers, in 8-bit units squared
_CLIP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class NoiseEstimate:
    """An estimated Gaussian noise level.

    ``level`` is the pooled estimate in 8-bit units (std * 255), the median of ``per_image``;
    ``method`` names the estimator used.
    """

    level: float
    per_image: tuple[float, ...]
    method: str

    @property
    def sigma(self) -> float:
        """The pooled std in [0, 1] units (``level / 255``), as ``physics.sigma``."""
        return self.level / 255.0


def estimate_noise_level(
    measurements: torch.Tensor | Sequence[torch.Tensor],
    physics: Operator | None = None,
    method: str = "auto",
) -> NoiseEstimate:
    """Estimate the Gaussian noise level of measurements in [0, 1] scale.

    :param measurements: ``(C, H, W)``, ``(B, C, H, W)`` or a sequence of ``(C, H, W)`` tensors of
        any sizes; all are assumed to share one noise level.
    :param physics: the forward operator (:func:`sei.physics.make_physics`), optional. A blur (an
        object with ``otf``) enables the physics-aware ``spectral`` estimator.
    :param str method: ``auto`` (default) or one of ``spectral``, ``pca``, ``weak_texture``, ``mad``.
    :return: a :class:`NoiseEstimate`; its ``level`` is the median over images (robust to an image
        whose texture or clipping fools the estimator), its ``method`` the estimators used, joined
        by ``+``.
    :raises SeiUserError: for a constant image, non-finite values, values not in [0, 1] scale, an
        image smaller than 16 pixels on a side, or ``spectral`` without a blur.

    :Examples:

    >>> import torch
    >>> from sei.physics import make_physics
    >>> physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    >>> ramp = torch.linspace(0.3, 0.9, 128)
    >>> x = (ramp[:, None] * ramp[None, :]).expand(1, 3, 128, 128)
    >>> y = physics.measure(x, seed=0).clamp(0, 1)
    >>> estimate = estimate_noise_level(y, physics)
    >>> estimate.method, round(estimate.level)
    ('spectral', 5)
    """
    if method not in METHODS:
        raise SeiUserError(f"unknown noise estimation method {method!r}: choose one of {', '.join(METHODS)}")
    images = _as_images(measurements)
    chosen = method
    if method == "auto":
        chosen = "spectral" if _spectral_applies(images, physics) else "pca"
    elif method == "spectral" and not hasattr(physics, "otf"):
        raise SeiUserError(
            "the spectral noise estimator needs a blur physics (make_physics('deblurring', ...))"
        )
    estimators = {
        "spectral": lambda y: _spectral(y, physics, strict=method == "auto"),
        "pca": _pca,
        "weak_texture": _weak_texture,
        "mad": _mad,
    }
    levels, used = [], []
    for image in images:
        name = chosen
        variance = estimators[name](image)
        if variance is None:  # every tile has clipped pixels: the patch estimator leaves them out
            name, variance = "pca", _pca(image)
        used.append(name)
        variance *= 255.0**2
        if _is_8bit(image):
            variance -= QUANTISATION_VARIANCE
        levels.append(math.sqrt(max(variance, 0.0)))
    chosen = "+".join(sorted(set(used), key=METHODS.index))
    return NoiseEstimate(level=float(statistics.median(levels)), per_image=tuple(levels), method=chosen)


# ---------------------------------------------------------------------------------------------- checks


def _as_images(
    measurements: torch.Tensor | Sequence[torch.Tensor], high_limit: float = 1.5
) -> list[torch.Tensor]:
    """Validate and split the input into float64 ``(C, H, W)`` images (values above ``high_limit``: not [0, 1]
    scale)."""
    if isinstance(measurements, torch.Tensor):
        if measurements.ndim == 3:
            items = [measurements]
        elif measurements.ndim == 4:
            items = list(measurements)
        else:
            raise SeiUserError(
                f"cannot estimate the noise level of a tensor of shape {tuple(measurements.shape)}: "
                "give (C, H, W), (B, C, H, W) or a list of (C, H, W)"
            )
    else:
        items = list(measurements)
    if not items:
        raise SeiUserError("cannot estimate the noise level of no measurements: the list is empty")
    images = []
    for index, item in enumerate(items):
        name = f"measurement {index}"
        if not isinstance(item, torch.Tensor) or item.ndim != 3:
            shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
            raise SeiUserError(
                f"cannot estimate the noise level of {name}: expected a (C, H, W) tensor, got {shape}"
            )
        image = item.detach().to("cpu", torch.float64)
        height, width = image.shape[-2:]
        if min(height, width) < MIN_SIDE or height * width < MIN_PIXELS:
            raise SeiUserError(
                f"cannot estimate the noise level of {name}: it is too small ({height}x{width}; "
                f"at least {MIN_SIDE} pixels a side and {MIN_PIXELS} pixels)"
            )
        if not torch.isfinite(image).all():
            raise SeiUserError(
                f"cannot estimate the noise level of {name}: it contains NaN or infinite values"
            )
        low, high = float(image.min()), float(image.max())
        if high - low < 1e-6:
            raise SeiUserError(f"cannot estimate the noise level of {name}: the measurement is constant")
        if low < -0.5 or high > high_limit:
            raise SeiUserError(
                f"cannot estimate the noise level of {name}: its values span [{low:.3g}, {high:.3g}]; "
                "give images in [0, 1] scale (divide 8-bit values by 255)"
            )
        images.append(image)
    return images


def _is_8bit(image: torch.Tensor) -> bool:
    """Every value a multiple of 1/255 (an 8-bit file read as float)."""
    scaled = image * 255.0
    return bool(((scaled - scaled.round()).abs() < 1e-3).all())


def _clipped(image: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` bool: pixels exactly at 0 or 1, where a clipped measurement lost its noise (an
    unclipped float measurement goes beyond [0, 1] instead, and almost never hits the bounds)."""
    return (image.abs() <= _CLIP_TOLERANCE) | ((image - 1).abs() <= _CLIP_TOLERANCE)


# ------------------------------------------------------------------------------------ spectral (blur)


def _tiles(image: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Overlapping (50 %) tiles of ``(C, H, W)``: ``(N, th, tw)`` with the tile size."""
    height, width = image.shape[-2:]
    th, tw = min(TILE, height), min(TILE, width)
    rows = _starts(height, th)
    cols = _starts(width, tw)
    tiles = [image[:, r : r + th, c : c + tw] for r in rows for c in cols]
    return torch.cat(tiles, 0), th, tw


def _starts(length: int, tile: int) -> list[int]:
    """Tile origins at half-tile steps, the last one flush with the end."""
    if length <= tile:
        return [0]
    step = tile // 2
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _noise_frequencies(physics: Operator, th: int, tw: int) -> torch.Tensor:
    """``(th, tw // 2 + 1)`` bool: where |OTF| is about 0, away from the rows and columns (0 and Nyquist)
    whose windowed periodogram is not exponential."""
    otf = physics.otf(th, tw, torch.float64, torch.device("cpu")).abs()
    otf = otf / otf[0, 0].clamp_min(1e-12)
    mask = otf < OTF_THRESHOLD
    ky = torch.arange(th)
    kx = torch.arange(tw // 2 + 1)
    dist_y = torch.minimum(ky % (th / 2), (-ky) % (th / 2))  # distance to row 0 or to the Nyquist row
    dist_x = torch.minimum(kx % (tw / 2), (-kx) % (tw / 2))
    away = (dist_y > 1.5)[:, None] & (dist_x > 1.5)[None, :]
    return mask & away


def _spectral_applies(images: list[torch.Tensor], physics: Operator) -> bool:
    if not hasattr(physics, "otf"):
        return False
    for image in images:
        height, width = image.shape[-2:]
        mask = _noise_frequencies(physics, min(TILE, height), min(TILE, width))
        if int(mask.sum()) < MIN_NOISE_FREQUENCIES:
            return False
    return True


def _spectral(image: torch.Tensor, physics: Operator, strict: bool = False) -> float | None:
    """Noise variance (in [0, 1] units squared) from the noise-only frequencies of windowed tiles.

    Tiles with more than 0.1 % clipped pixels are left out: clipping removes noise (and its
    nonlinearity spreads the signal). With none left, ``None`` if ``strict``, else all tiles are used."""
    tiles, th, tw = _tiles(image)
    clean = ~_tiles(_clipped(image).double())[0].bool().flatten(1).float().mean(1).gt(0.001)
    if clean.any():
        tiles = tiles[clean]
    elif strict:
        return None
    window = (
        torch.hann_window(th, periodic=False, dtype=torch.float64)[:, None]
        * torch.hann_window(tw, periodic=False, dtype=torch.float64)[None, :]
    )
    centred = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(centred * window).abs() ** 2 / window.pow(2).sum()
    mask = _noise_frequencies(physics, th, tw)
    if int(mask.sum()) == 0:
        raise SeiUserError(
            "cannot estimate the noise level with the spectral estimator: the blur leaves no noise-only "
            "frequencies; use method='pca'"
        )
    values = power[:, mask]
    return float(values.median()) / math.log(2.0)


# ------------------------------------------------------------------------------ patch PCA estimators


def _patch_stride(height: int, width: int) -> int:
    count = (height - PATCH + 1) * (width - PATCH + 1)
    return max(1, math.ceil(math.sqrt(count / MAX_PATCHES)))


def _patches(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``PATCH x PATCH`` patches across all channels, ``(C * PATCH**2, N)``; which of them hold no
    clipped pixel, ``(N,)`` bool; and the gradient energy of each, ``(N,)`` (sum of squared horizontal
    and vertical differences inside the patch). Joint colour patches matter: the channels of a
    photograph share most of their structure while their noise is independent, which leaves
    noise-only directions even in sharp images."""
    channels, height, width = image.shape
    stride = _patch_stride(height, width)
    patches = F.unfold(image[None], PATCH, stride=stride)[0]  # (C*P*P, N)
    clipped = _clipped(image).any(0).double()[None, None]
    keep = F.max_pool2d(clipped, PATCH, stride=stride).flatten() == 0
    horizontal = image.diff(dim=-1).pow(2).sum(0)[None, None]
    vertical = image.diff(dim=-2).pow(2).sum(0)[None, None]
    cells = PATCH * (PATCH - 1)
    energy = (
        cells
        * (
            F.avg_pool2d(horizontal[..., :, : width - 1], (PATCH, PATCH - 1), stride=stride)
            + F.avg_pool2d(vertical, (PATCH - 1, PATCH), stride=stride)
        ).flatten()
    )
    if int(keep.sum()) < 4 * patches.shape[0]:  # mostly clipped: use everything rather than nothing
        keep = torch.ones_like(keep)
    return patches, keep, energy


def _eigen_rule(patches: torch.Tensor, selected: torch.Tensor) -> float:
    """Chen et al.'s rule on the patches (columns) ``selected``: the mean of the largest set of smallest
    covariance eigenvalues whose mean does not exceed their median (noise eigenvalues are spread about
    sigma^2 almost symmetrically)."""
    weights = selected.to(patches.dtype)
    count = weights.sum()
    mean = patches @ weights / count
    covariance = (patches * weights) @ patches.T / count - mean[:, None] * mean[None, :]
    values = torch.linalg.eigvalsh(covariance).clamp_min(0)  # ascending
    for size in range(values.numel(), 0, -1):
        head = values[:size]
        average = float(head.mean())
        if average <= float(head.quantile(0.5)):
            return average
    return float(values[0])


def _pca(image: torch.Tensor) -> float:
    patches, keep, _ = _patches(image)
    return _eigen_rule(patches, keep)


_GAMMA_QUANTILE: dict[tuple[int, int], float] = {}


def _gamma_quantile(channels: int) -> float:
    """99 % quantile of the gradient energy of a pure-noise patch, in units of sigma^2 (Liu et al.'s
    gamma approximation: shape N / 2, mean = trace of the difference operators' Gram matrix)."""
    key = (channels, PATCH)
    if key not in _GAMMA_QUANTILE:
        from scipy.stats import gamma

        pixels = channels * PATCH * PATCH
        trace = channels * 4 * PATCH * (PATCH - 1)  # every difference has two +-1 entries
        _GAMMA_QUANTILE[key] = float(gamma.ppf(0.99, pixels / 2, scale=2 * trace / pixels))
    return _GAMMA_QUANTILE[key]


def _weak_texture(image: torch.Tensor, iterations: int = 6) -> float:
    patches, keep, energy = _patches(image)
    variance = _eigen_rule(patches, keep)
    quantile = _gamma_quantile(image.shape[0])
    minimum = 2 * patches.shape[0]  # too few weak-texture patches for a covariance: keep the estimate
    for _ in range(iterations):
        selected = keep & (energy < quantile * variance)
        if int(selected.sum()) < minimum:
            break
        updated = _eigen_rule(patches, selected)
        converged = abs(updated - variance) <= 1e-4 * variance
        variance = updated
        if converged:
            break
    return variance


# ------------------------------------------------------------------------------------------------ MAD


def _mad(image: torch.Tensor) -> float:
    """Donoho's MAD of the finest diagonal Haar band, leaving out 2x2 blocks with clipped pixels."""
    height, width = (image.shape[-2] // 2) * 2, (image.shape[-1] // 2) * 2
    y = image[:, :height, :width]
    diagonal = (y[:, 0::2, 0::2] - y[:, 0::2, 1::2] - y[:, 1::2, 0::2] + y[:, 1::2, 1::2]) / 2
    bad = F.max_pool2d(_clipped(y).double()[:, None], 2)[:, 0] > 0
    values = diagonal[~bad] if int((~bad).sum()) >= 64 else diagonal.flatten()
    return (float(values.abs().median()) / 0.6745) ** 2


# ------------------------------------------------------------------------------ Poisson-Gaussian (Foi)

PG_BINS = 12  # intensity bins of the variance-mean fit
PG_HIGH_LIMIT = 10.0  # largest value accepted as [0, 1] scale (8-bit or 16-bit integers are far above)
PG_MIN_SAMPLES = 100  # fewest residuals a bin needs to count
PG_MAX_ZEROS = 0.01  # a bin with more pixels at exactly 0 is dropped: clipping at 0 would bias its variance
PG_SMOOTH_FRACTION = 0.5  # the smoothest share of the blocks in each bin is kept
PG_MIN_SPAN = 0.05  # local means must span at least this much of [0, 1] to separate gain from sigma


@dataclass(frozen=True)
class PoissonGaussianEstimate:
    """Estimated Poisson-Gaussian noise, :math:`\\operatorname{Var} y = \\gamma\\, \\mathbb{E} y + \\sigma^2`.

    ``gain_level`` (:math:`\\gamma \\cdot 255`) and ``noise_level`` (:math:`\\sigma \\cdot 255`) are in
    8-bit units, as ``--gain`` and ``--noise_level``; ``bins`` holds the (local mean, variance, count)
    points the line was fitted to.
    """

    gain_level: float
    noise_level: float
    bins: tuple[tuple[float, float, int], ...]
    method: str = "variance-mean"


def estimate_poisson_gaussian(measurements: torch.Tensor | Sequence[torch.Tensor]) -> PoissonGaussianEstimate:
    r"""Estimate the gain and the Gaussian std of Poisson-Gaussian noise from the measurements alone, in the
    manner of Foi, Trimeche, Katkovnik and Egiazarian (IEEE TIP 2008): a fit of the local variance against
    the local mean over smooth regions.

    Every 2x2 block gives a noise residual, its diagonal difference :math:`(y_{00} - y_{01} - y_{10} +
    y_{11})/2`, whose variance is the block's mean noise variance :math:`\gamma u + \sigma^2` (the
    signal cancels up to its mixed second derivative, small in smooth regions and in blurred images),
    and a local mean, the mean of the 6x6 pixels around it. Blocks near saturated pixels (at 1) are left
    out, and so are the bins where more than 1 % of the pixels are exactly 0 (clipping there would bias the
    variance; a few zeros are photon counts of 0). The
    blocks of all images are binned by local mean (equal counts); in each bin the smoothest half
    (lowest gradient of the local mean) gives the variance of the residuals (a plain sample variance: at
    a few photons the residuals take a handful of values, and a median-based estimate collapses). A weighted
    least-squares line through the (mean, variance) points (weights
    :math:`n_k / v_k^2`, the inverse variance of a variance estimate) gives :math:`\gamma` (slope) and
    :math:`\sigma^2` (intercept), both clamped at 0. For 8-bit data the rounding variance (1/12 in 8-bit
    units) is subtracted from the intercept.

    :param measurements: ``(C, H, W)``, ``(B, C, H, W)`` or a sequence of ``(C, H, W)`` tensors in [0, 1]
        scale, sharing one noise model.
    :raises SeiUserError: for a constant image (and the other checks of :func:`estimate_noise_level`), or
        measurements whose intensities span too narrow a range to tell the gain from the Gaussian part.

    >>> import torch
    >>> from sei.physics import make_physics
    >>> physics = make_physics(
    ...     "deblurring", kernel="Gaussian_R2", noise_level=5, noise_model="poisson-gaussian", gain=5
    ... )
    >>> ramp = torch.linspace(0.05, 0.95, 256)
    >>> y = physics.measure(ramp[None, None, :, None].expand(1, 1, 256, 256), seed=0)
    >>> estimate = estimate_poisson_gaussian(y)
    >>> round(estimate.gain_level), round(estimate.noise_level)
    (5, 5)
    """
    # unclipped photon-limited data go well above 1 (at 10 photons full scale, a count of 23 is 2.3)
    images = _as_images(measurements, high_limit=PG_HIGH_LIMIT)
    blocks = [_pg_blocks(image) for image in images]
    mean, residual, rough, zeros = (torch.cat(parts) for parts in zip(*blocks, strict=True))
    if mean.numel() < PG_BINS * PG_MIN_SAMPLES:
        raise SeiUserError(
            f"cannot estimate Poisson-Gaussian noise: only {mean.numel()} unclipped 2x2 blocks "
            f"(at least {PG_BINS * PG_MIN_SAMPLES} are needed); give larger or more measurements"
        )
    low, high = torch.quantile(mean, 0.02).item(), torch.quantile(mean, 0.98).item()
    # a 6x6 local mean of flat noisy data spreads over about 4.1 of its stds (2-98 %): the scene must do more
    noise_span = 4.1 * float(residual.std()) / 6
    if high - low < max(PG_MIN_SPAN, 3 * noise_span):
        raise SeiUserError(
            f"cannot estimate Poisson-Gaussian noise: the measurements' local means span only [{low:.3g}, "
            f"{high:.3g}], "
            "too narrow to tell the gain from the Gaussian part; give --gain and --noise_level"
        )
    order = torch.argsort(mean)
    points, zero_shares = [], []
    for chunk in torch.tensor_split(order, PG_BINS):
        if chunk.numel() < PG_MIN_SAMPLES:
            continue
        smooth = chunk[rough[chunk] <= torch.quantile(rough[chunk], PG_SMOOTH_FRACTION)]
        points.append((float(mean[smooth].mean()), float(residual[smooth].var()), int(smooth.numel())))
        zero_shares.append(float(zeros[chunk].mean()))
    unclipped = [point for point, share in zip(points, zero_shares, strict=True) if share <= PG_MAX_ZEROS]
    if len(unclipped) >= 3:  # else (very few photons: zeros everywhere) every bin is used
        points = unclipped
    gain, variance = _weighted_line(points)
    variance *= 255.0**2
    if all(_is_8bit(image) for image in images):
        variance -= QUANTISATION_VARIANCE
    return PoissonGaussianEstimate(
        gain_level=gain * 255.0, noise_level=math.sqrt(max(variance, 0.0)), bins=tuple(points)
    )


def _pg_blocks(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unsaturated 2x2 block of every channel: local mean (6x6), diagonal residual, local roughness,
    share of its pixels at exactly 0."""
    height, width = (image.shape[-2] // 2) * 2, (image.shape[-1] // 2) * 2
    y = image[:, None, :height, :width]  # (C, 1, H, W)
    a, b = y[..., 0::2, 0::2], y[..., 0::2, 1::2]
    c, d = y[..., 1::2, 0::2], y[..., 1::2, 1::2]
    residual = (a - b - c + d) / 2
    block_mean = (a + b + c + d) / 4
    local_mean = F.avg_pool2d(F.pad(block_mean, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    gradient = (local_mean[..., 1:-1, 2:] - local_mean[..., 1:-1, :-2]) ** 2 + (
        local_mean[..., 2:, 1:-1] - local_mean[..., :-2, 1:-1]
    ) ** 2
    gradient = F.pad(gradient, (1, 1, 1, 1), mode="replicate")
    # saturated pixels (at 1) lost their noise: leave out the blocks around them. Zeros stay: under Poisson
    # noise they are counts; the bins where clipping at 0 matters are dropped as a whole (PG_MAX_ZEROS)
    saturated = ((image - 1).abs() <= _CLIP_TOLERANCE)[:, None, :height, :width].double()
    near_clip = F.max_pool2d(F.pad(F.avg_pool2d(saturated, 2), (1, 1, 1, 1)), 3, stride=1) > 0
    zeros = F.avg_pool2d((image.abs() <= _CLIP_TOLERANCE)[:, None, :height, :width].double(), 2)
    keep = ~near_clip
    return local_mean[keep], residual[keep], gradient[keep], zeros[keep]


def _weighted_line(points: list[tuple[float, float, int]]) -> tuple[float, float]:
    """Slope and intercept of ``variance = slope * mean + intercept`` by least squares weighted by
    ``n / v^2`` (two reweighting passes with the fitted variances), both >= 0."""
    if len(points) < 2:
        raise SeiUserError(
            "cannot estimate Poisson-Gaussian noise: too few intensity levels in the measurements"
        )
    m = torch.tensor([p[0] for p in points], dtype=torch.float64)
    v = torch.tensor([p[1] for p in points], dtype=torch.float64)
    n = torch.tensor([p[2] for p in points], dtype=torch.float64)
    fitted = v.clamp_min(1e-12)
    slope = intercept = 0.0
    for _ in range(3):
        weights = n / fitted**2
        design = torch.stack([m, torch.ones_like(m)], dim=1)
        lhs = design.T @ (weights[:, None] * design)
        rhs = design.T @ (weights * v)
        slope, intercept = torch.linalg.solve(lhs, rhs).tolist()
        if slope < 0:  # no signal dependence: Gaussian noise, the weighted mean variance
            slope, intercept = 0.0, float((weights * v).sum() / weights.sum())
        if intercept < 0:  # Poisson alone: a line through the origin
            intercept = 0.0
            slope = float((weights * m * v).sum() / (weights * m * m).sum())
        fitted = (slope * m + intercept).clamp_min(1e-12)
    return max(slope, 0.0), max(intercept, 0.0)


def resolve_poisson_gaussian(
    measurements: torch.Tensor | Sequence[torch.Tensor], noise_level: float | str, gain: float | str
) -> tuple[float, float, PoissonGaussianEstimate | None]:
    """``--noise poisson-gaussian`` with ``auto``: ``(noise level, gain)`` in 8-bit units, each one given as
    ``"auto"`` estimated from ``measurements`` by :func:`estimate_poisson_gaussian` (the numbers given are
    kept), and the estimate (``None`` when nothing was ``auto``).

    :raises SeiUserError: when the estimate cannot be made (a constant image...), or when ``gain`` is
        ``auto`` and the measurements show no signal-dependent noise (estimated gain 0).
    """
    if "auto" not in (noise_level, gain):
        return float(noise_level), float(gain), None
    estimate = estimate_poisson_gaussian(measurements)
    if gain == "auto" and not estimate.gain_level > 0:
        raise SeiUserError(
            "the measurements show no signal-dependent noise (estimated gain 0); use --noise gaussian"
        )
    level = estimate.noise_level if noise_level == "auto" else float(noise_level)
    fitted = estimate.gain_level if gain == "auto" else float(gain)
    return level, fitted, estimate

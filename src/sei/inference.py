"""Applying a reconstructor to whole images: choosing it from flags or weights, and tiled inference.

Tiled inference bounds peak memory whatever the image size: the measurement is cut into
overlapping tiles, each tile goes through the network alone, and the outputs are blended with
weights that fall linearly to (almost) zero across the overlap, so seams vanish and the result
matches whole-image inference where both fit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch

from sei.errors import SeiUserError

if TYPE_CHECKING:
    from sei.physics import Operator

Reconstructor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Loaded:
    """A ready reconstructor with the operator it inverts and where it came from."""

    reconstruct: Reconstructor
    physics: Operator
    description: dict[str, Any] = field(default_factory=dict)
    network: torch.nn.Module | None = None


def load_reconstructor(
    weights: str | None,
    model_kind: str | None,
    task: str | None,
    kernel: str | None,
    sr_factor: int | None,
    noise_level: float | None,
    device: torch.device,
    options: dict[str, Any] | None = None,
    noise_model: str | None = None,
    gain: float | None = None,
) -> Loaded:
    """Build what ``sei test`` / ``sei reconstruct`` run: trained weights, or a training-free method.
    ``noise_model`` and ``gain`` (Poisson-Gaussian noise) describe the measurements; weights keep the
    noise model they were trained for (another one is an error)."""
    from sei.models import RECONSTRUCTORS, create_reconstructor
    from sei.physics import make_physics
    from sei.problem import DEFAULT_NOISE_LEVEL, DEFAULT_NOISE_MODEL, DEFAULT_TASK

    if model_kind in RECONSTRUCTORS:
        if weights:
            raise SeiUserError(f"--model_kind {model_kind} needs no --weights; drop one of the two")
        physics = make_physics(
            task or DEFAULT_TASK,
            kernel=kernel,
            sr_factor=sr_factor,
            noise_level=DEFAULT_NOISE_LEVEL if noise_level is None else noise_level,
            noise_model=noise_model or DEFAULT_NOISE_MODEL,
            gain=gain,
        ).to(device)
        method = create_reconstructor(model_kind, physics, **(options or {}))
        if isinstance(method, torch.nn.Module):
            method = method.to(device)
        return Loaded(method, physics, {"model_kind": model_kind, **physics.describe()})
    if model_kind is not None:
        from sei.models import list_models

        if model_kind not in list_models():
            raise SeiUserError(
                f"unknown model kind {model_kind!r}: choose a training-free method "
                f"({', '.join(RECONSTRUCTORS)}) or a network ({', '.join(list_models())}) with --weights"
            )
        if not weights:
            raise SeiUserError(
                f"--model_kind {model_kind} is a network: give its trained --weights (a file or a "
                "pretrained name)"
            )
    if not weights:
        weights = default_weights(task, kernel, sr_factor, noise_level, noise_model, gain)
    from sei.weights import load_weights_with_physics

    network, metadata, physics = load_weights_with_physics(
        weights,
        device=str(device),
        task=task,
        kernel=kernel,
        sr_factor=sr_factor,
        noise_level=noise_level,
        noise_model=noise_model,
        gain=gain,
    )
    stored_model = (metadata.get("model") or {}).get("name")
    if model_kind is not None and stored_model not in (None, model_kind):
        raise SeiUserError(
            f"--model_kind {model_kind} does not match the weights, which hold a {stored_model} network; "
            "drop --model_kind"
        )
    network = network.to(device).eval()

    @torch.no_grad()
    def reconstruct(y: torch.Tensor) -> torch.Tensor:
        return network(y)

    return Loaded(reconstruct, physics, {"weights": str(weights), **metadata}, network)


@dataclass(frozen=True)
class _Choice:
    """The flags that choose a reconstructor, named as :func:`load_reconstructor` takes them."""

    weights: str | None
    model_kind: str | None
    task: str | None
    kernel: Any
    sr_factor: int | None
    noise_level: float | str | None
    device: torch.device
    options: dict[str, Any] | None
    noise_model: str | None = None
    gain: float | str | None = None

    def load(self, **changes: Any) -> Loaded:
        """:func:`load_reconstructor` with these flags, ``changes`` replacing some of them."""
        chosen = replace(self, **changes)
        return load_reconstructor(**{flag.name: getattr(chosen, flag.name) for flag in fields(chosen)})


def load_for_measurements(
    weights: str | None,
    model_kind: str | None,
    task: str | None,
    kernel: Any,
    sr_factor: int | None,
    noise_level: float | str | None,
    device: torch.device,
    options: dict[str, Any] | None,
    measurements: Callable[[Any], list[torch.Tensor]],
    noise_model: str | None = None,
    gain: float | str | None = None,
) -> tuple[Loaded, float | None]:
    """:func:`load_reconstructor` with ``--noise_level auto`` (and, for Poisson-Gaussian noise, ``--gain
    auto``) resolved: the level is estimated from ``measurements(physics)`` (printed) and a
    training-free method is told it; a network keeps the level it was trained for, with a warning when
    the measurements look much noisier or cleaner. Returns the reconstructor and the estimated level
    (``None`` without ``auto``)."""
    from sei.physics.noise import AUTO
    from sei.problem import POISSON_GAUSSIAN

    choice = _Choice(
        weights, model_kind, task, kernel, sr_factor, noise_level, device, options, noise_model, gain
    )
    if noise_model == POISSON_GAUSSIAN or (gain == AUTO and noise_model is None):
        return _load_poisson_gaussian(choice, measurements)
    if gain == AUTO:
        raise SeiUserError("--gain auto applies to --noise poisson-gaussian")
    if noise_level != AUTO:
        return choice.load(), None
    from sei.noise_estimation import estimate_noise_level

    loaded = choice.load(noise_level=None, noise_model=None, gain=None)
    if getattr(loaded.physics, "poisson", False):  # weights trained for Poisson-Gaussian noise
        return _load_poisson_gaussian(choice, measurements)
    ys = measurements(loaded.physics)
    estimate = estimate_noise_level(ys, physics=loaded.physics)
    print(
        f"sei: estimated noise level {estimate.level:.3g} (8-bit units) from {len(ys)} measurement(s) "
        f"({estimate.method})",
        file=sys.stderr,
        flush=True,
    )
    if loaded.network is None:
        return choice.load(
            weights=None, noise_level=estimate.level, noise_model=None, gain=None
        ), estimate.level
    trained = float(loaded.physics.noise_level)
    if abs(estimate.level - trained) > max(1.0, 0.5 * trained):
        print(
            f"sei: warning: these weights were trained for noise level {trained:g}, the measurements look "
            f"like {estimate.level:.2g}; fine-tune on them (sei restore, or sei train --init) for better "
            "results",
            file=sys.stderr,
            flush=True,
        )
    return loaded, estimate.level


def _load_poisson_gaussian(
    choice: _Choice, measurements: Callable[[Any], list[torch.Tensor]]
) -> tuple[Loaded, float | None]:
    """:func:`load_for_measurements` for Poisson-Gaussian noise: ``auto`` gain and/or level come from
    :func:`sei.noise_estimation.estimate_poisson_gaussian` on the measurements themselves."""
    from sei.physics.noise import AUTO
    from sei.problem import POISSON_GAUSSIAN

    choice = replace(choice, noise_model=POISSON_GAUSSIAN)
    noise_level, gain = choice.noise_level, choice.gain
    if choice.weights is None and choice.model_kind is None:  # the shipped photon-limited model, if one fits
        known_gain = None if gain in (AUTO, None) else float(gain)
        shipped = closest_shipped(
            choice.task,
            choice.kernel,
            choice.sr_factor,
            None,
            same_kernel=True,
            noise_model=POISSON_GAUSSIAN,
            gain=known_gain,
        )
        if shipped is None:
            raise SeiUserError(
                "no shipped model for this problem with Poisson-Gaussian noise: give --weights trained for "
                "it (sei restore trains one) or a training-free --model_kind"
            )
        choice = replace(choice, weights=shipped)
    if noise_level != AUTO and gain != AUTO:
        return choice.load(), None
    from sei.noise_estimation import estimate_poisson_gaussian

    placeholder_level = None if noise_level == AUTO else noise_level
    if choice.model_kind is not None and choice.weights is None:
        placeholder_gain = 1.0 if gain in (AUTO, None) else gain  # replaced by the estimate below
        loaded = choice.load(noise_level=placeholder_level, gain=placeholder_gain)
    else:
        loaded = choice.load(noise_level=placeholder_level, gain=None)
    ys = measurements(loaded.physics)
    estimate = estimate_poisson_gaussian(ys)
    level = estimate.noise_level if noise_level == AUTO else float(noise_level)
    fitted_gain = estimate.gain_level if gain in (AUTO, None) else float(gain)
    print(
        f"sei: estimated Poisson-Gaussian noise from {len(ys)} measurement(s): gain "
        f"{estimate.gain_level:.3g}, noise level {estimate.noise_level:.3g} (8-bit units)",
        file=sys.stderr,
        flush=True,
    )
    if fitted_gain <= 0:
        raise SeiUserError(
            "the measurements show no signal-dependent noise (estimated gain 0); use --noise gaussian"
        )
    if loaded.network is None:
        return choice.load(weights=None, noise_level=level, gain=fitted_gain), level
    trained = float(loaded.physics.gain_level)
    if abs(fitted_gain - trained) > 0.5 * trained:
        print(
            f"sei: warning: these weights were trained for gain {trained:g}, the measurements look like "
            f"{fitted_gain:.2g}; fine-tune on them (sei train --init) for better results",
            file=sys.stderr,
            flush=True,
        )
    return loaded, level


def default_weights(
    task: str | None,
    kernel: Any,
    sr_factor: int | None,
    noise_level: float | None,
    noise_model: str | None = None,
    gain: float | None = None,
) -> str:
    """The shipped model for a task and noise model, e.g. ``sei-gaussian_r2-noise5``, or
    ``sei-gaussian_r2-photon30`` for Poisson-Gaussian noise (a kernel file holding the same PSF as a shipped
    model's kernel finds it too); an error if there is none."""
    name = closest_shipped(
        task, kernel, sr_factor, noise_level, same_kernel=True, noise_model=noise_model, gain=gain
    )
    if name is None:
        raise SeiUserError(
            "no shipped model for this task; pass --weights FILE_OR_NAME or a --model_kind such as wiener "
            "or pnp (or train one on your measurements: sei restore)"
        )
    return name


def closest_shipped(
    task: str | None,
    kernel: Any,
    sr_factor: int | None,
    noise_level: float | None,
    same_kernel: bool = False,
    noise_model: str | None = None,
    gain: float | None = None,
) -> str | None:
    """The shipped model nearest to a problem: same task (and SR factor); the same noise model when there is
    one (``noise_model``, Gaussian by default); the same kernel by value when there is one, else (unless
    ``same_kernel``) the kernel whose blur is nearest (:func:`sei.physics.state.kernel_distance`); then the
    nearest gain (by ratio, when known) or noise level (``noise_level``: for Poisson-Gaussian data, the std a
    Gaussian model would be told); ``None`` if none fits. With ``same_kernel`` (the model ``sei reconstruct``
    uses when no weights are named) the noise model must match too."""
    import math

    from sei.physics import get_kernel
    from sei.physics.state import kernel_distance, kernels_match
    from sei.problem import (
        DEFAULT_KERNEL,
        DEFAULT_NOISE_LEVEL,
        DEFAULT_SR_FACTOR,
        DEFAULT_TASK,
        GAUSSIAN,
        POISSON_GAUSSIAN,
    )
    from sei.weights import PRETRAINED

    task = task or DEFAULT_TASK
    wanted = get_kernel(kernel if kernel is not None else DEFAULT_KERNEL) if task == "deblurring" else None
    noise = DEFAULT_NOISE_LEVEL if noise_level is None else float(noise_level)
    noise_model = noise_model or GAUSSIAN
    candidates = []
    for name, cfg in PRETRAINED.items():
        if cfg.task != task or (task == "sr" and cfg.sr_factor != (sr_factor or DEFAULT_SR_FACTOR)):
            continue
        shipped = get_kernel(cfg.kernel) if wanted is not None else None
        matches = wanted is None or kernels_match(shipped, wanted)
        if same_kernel and (not matches or cfg.noise_model != noise_model):
            continue
        if (
            same_kernel
            and noise_model == GAUSSIAN
            and noise_level is not None
            and abs(cfg.noise_level - noise) > 1e-9
        ):
            continue
        distance = 0.0 if matches else kernel_distance(shipped, wanted)
        if cfg.noise_model == POISSON_GAUSSIAN and noise_model == POISSON_GAUSSIAN:
            noise_distance = 0.0 if gain is None else abs(math.log(cfg.gain / gain))
        else:
            noise_distance = abs(cfg.noise_level - noise)
        candidates.append((cfg.noise_model != noise_model, not matches, distance, noise_distance, name))
    return min(candidates)[-1] if candidates else None


# ---------------------------------------------------------------------------------------------
# the symmetry ensemble

DIHEDRAL = tuple(range(8))  # the flips and quarter turns of the square: 4 * flip + quarter turns


def dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """One of the eight flips and quarter turns of the square (``index`` in :data:`DIHEDRAL`): a left-right
    flip when ``index >= 4``, then ``index % 4`` quarter turns."""
    x = x.flip(-1) if index >= 4 else x
    return torch.rot90(x, index % 4, (-2, -1))


def dihedral_inverse(x: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of :func:`dihedral`."""
    x = torch.rot90(x, -(index % 4), (-2, -1))
    return x.flip(-1) if index >= 4 else x


def physics_symmetries(physics: Operator, size: int = 48, tolerance: float = 1e-4) -> tuple[int, ...]:
    """The flips and quarter turns ``g`` that commute with the forward model, ``A(g x) = g A(x)``, found by
    applying both sides to a random image. All eight for a symmetric PSF (Gaussian, box, disk) and for
    bicubic SR; the identity and the half turn for a PSF that is only point-symmetric; the identity alone
    for one with no symmetry, or an even-sized kernel (its centre is half a pixel off, so a flip shifts)."""
    generator = torch.Generator().manual_seed(0)
    side = size * physics.scale
    x = torch.rand(1, 1, side, side, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        reference = physics.A(x)
        found = []
        for index in DIHEDRAL:
            error = physics.A(dihedral(x, index)) - dihedral(reference, index)
            if float(error.abs().max()) <= tolerance * float(reference.abs().max()):
                found.append(index)
    return tuple(found)


def symmetry_ensemble(reconstruct: Reconstructor, symmetries: tuple[int, ...]) -> Reconstructor:
    """The average of ``g^-1 f(g y)`` over the ``symmetries`` ``g`` of the forward model (geometric
    self-ensemble). Each term is itself an estimator for the same forward model when ``A`` commutes with ``g``
    (:func:`physics_symmetries`) and the image statistics do not prefer an orientation, so the average keeps
    the estimate's expectation and lowers the variance that the network's own orientation bias and the
    noise give it. It costs one network pass per symmetry."""

    def ensemble(y: torch.Tensor) -> torch.Tensor:
        total = None
        for index in symmetries:
            estimate = dihedral_inverse(reconstruct(dihedral(y, index)), index)
            total = estimate if total is None else total + estimate
        return total / len(symmetries)

    return ensemble


def ensemble_symmetries(physics: Operator) -> tuple[int, ...]:
    """:func:`physics_symmetries` for ``--ensemble``, said on stderr when there is none but the identity (the
    flag then changes nothing, and is not ignored silently)."""
    symmetries = physics_symmetries(physics)
    if len(symmetries) == 1:
        print(
            "sei: --ensemble: the forward model has no flip or quarter-turn symmetry (an asymmetric PSF); "
            "the reconstruction is the plain one",
            file=sys.stderr,
        )
    return symmetries


def ensembled(loaded: Loaded) -> Loaded:
    """``loaded`` with its reconstruction averaged over the forward model's symmetries (``--ensemble``):
    :func:`symmetry_ensemble` over :func:`ensemble_symmetries`; the description records how many."""
    symmetries = ensemble_symmetries(loaded.physics)
    return replace(
        loaded,
        reconstruct=symmetry_ensemble(loaded.reconstruct, symmetries),
        description={**loaded.description, "ensemble": len(symmetries)},
    )


# ---------------------------------------------------------------------------------------------
# tiled inference


def _ramp(length: int, overlap: int, taper_start: bool, taper_end: bool) -> torch.Tensor:
    """1 inside, falling linearly to a small positive value across ``overlap`` at tapered ends."""
    weights = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        rise = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
        if taper_start:
            weights[:overlap] = torch.minimum(weights[:overlap], rise)
        if taper_end:
            weights[length - overlap :] = torch.minimum(weights[length - overlap :], rise.flip(0))
    return weights


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tiled(
    reconstruct: Reconstructor, y: torch.Tensor, scale: int = 1, tile: int = 256, overlap: int = 32
) -> torch.Tensor:
    """Apply ``reconstruct`` to ``y`` (``(1, C, h, w)``) tile by tile (tiles and overlap in measurement
    pixels) and blend; the output is ``scale`` times larger. Whole-image inference when it fits one tile."""
    if overlap * 2 >= tile:
        raise SeiUserError(f"tile overlap {overlap} must be less than half the tile size {tile}")
    _, channels, height, width = y.shape
    if height <= tile and width <= tile:
        return reconstruct(y)
    out = None
    total = torch.zeros(1, 1, height * scale, width * scale, dtype=torch.float64, device=y.device)
    rows, cols = _starts(height, tile, overlap), _starts(width, tile, overlap)
    for top in rows:
        for left in cols:
            piece = y[..., top : top + tile, left : left + tile]
            estimate = reconstruct(piece).double()
            th, tw = estimate.shape[-2:]
            weight = (
                _ramp(th, overlap * scale, top > 0, top + tile < height)[:, None]
                * _ramp(tw, overlap * scale, left > 0, left + tile < width)[None, :]
            )
            weight = weight.to(y.device)
            if out is None:
                out = torch.zeros(
                    1, estimate.shape[1], height * scale, width * scale, dtype=torch.float64, device=y.device
                )
            region = (..., slice(top * scale, top * scale + th), slice(left * scale, left * scale + tw))
            out[region] += estimate * weight
            total[region] += weight
    return (out / total).to(y.dtype)

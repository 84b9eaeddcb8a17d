"""Physics that travels with a model: the operator as plain metadata plus its tensors.

A network trained with ``--kernel some/dir/psf.npy`` must be usable from any folder, so weights and
checkpoints carry the kernel *tensor*, never only its path. :func:`physics_state` splits an operator
into JSON-able metadata and tensors; :func:`physics_from_state` rebuilds it. Kernels are compared by
value (:func:`kernels_match`), so the same PSF named by another path, or by name, is the same kernel.

>>> from sei.physics import make_physics
>>> physics = make_physics("deblurring", kernel="Gaussian_R1.5", noise_level=3)
>>> metadata, tensors = physics_state(physics)
>>> rebuilt = physics_from_state(metadata, tensors)
>>> rebuilt.describe() == physics.describe(), bool((rebuilt.kernel == physics.kernel).all())
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sei.errors import SeiUserError
from sei.problem import DEFAULT_NOISE_LEVEL, GAUSSIAN, NOISE_MODELS

if TYPE_CHECKING:
    from sei.physics import Operator

KERNEL_TOLERANCE = 1e-6  # relative to the kernel's peak: float32 round trips of a PSF file agree far below it


def physics_state(physics: Operator) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` that rebuild ``physics``: ``describe()`` plus the noise model (and its
    ``gain`` for Poisson-Gaussian noise), and the deblurring kernel as a float64 tensor under ``"kernel"``."""
    metadata = {"noise_model": GAUSSIAN, **physics.describe()}
    tensors: dict[str, torch.Tensor] = {}
    if physics.task == "deblurring":
        tensors["kernel"] = physics.kernel.detach().to("cpu", torch.float64).contiguous()
    return metadata, tensors


def physics_from_state(
    metadata: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    noise_level: float | None = None,
    gain: float | None = None,
) -> Operator:
    """The operator described by :func:`physics_state`'s output (``noise_level`` and, for Poisson-Gaussian
    noise, ``gain`` override the stored ones)."""
    from sei.physics import Blur, make_physics
    from sei.physics.kernels import normalise_kernel

    noise = float(metadata.get("noise_level", DEFAULT_NOISE_LEVEL) if noise_level is None else noise_level)
    model = metadata.get("noise_model", GAUSSIAN)
    if model not in NOISE_MODELS:
        raise SeiUserError(
            f"unknown noise model {model!r} in the stored physics; this sei knows {', '.join(NOISE_MODELS)}"
        )
    stored_gain = metadata.get("gain") if model != GAUSSIAN else None
    noise_facts = {"noise_model": model, "gain": stored_gain if gain is None or model == GAUSSIAN else gain}
    if metadata.get("task") == "deblurring":
        if "kernel" not in tensors:
            return make_physics("deblurring", kernel=metadata.get("kernel"), noise_level=noise, **noise_facts)
        kernel = normalise_kernel(tensors["kernel"], source="stored kernel")
        return Blur(
            kernel,
            noise_level=noise,
            kernel_label=str(metadata.get("kernel") or "custom"),
            noise_kind=noise_facts["noise_model"],
            gain=noise_facts["gain"],
        )
    return make_physics(
        str(metadata.get("task")), sr_factor=metadata.get("sr_factor"), noise_level=noise, **noise_facts
    )


def _centred(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor | None:
    """``kernel`` zero-padded to ``height x width`` around its centre, or ``None`` if the centres cannot
    align."""
    pad_h, pad_w = height - kernel.shape[-2], width - kernel.shape[-1]
    if pad_h % 2 or pad_w % 2:
        return None
    return F.pad(kernel, (pad_w // 2, pad_w // 2, pad_h // 2, pad_h // 2))


def kernel_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    """Largest difference between two normalised kernels, relative to the first one's peak (zero
    padding around the centre makes different supports comparable); ``inf`` if the centres differ."""
    first, second = first.to(torch.float64), second.to(torch.float64)
    height = max(first.shape[-2], second.shape[-2])
    width = max(first.shape[-1], second.shape[-1])
    a, b = _centred(first, height, width), _centred(second, height, width)
    if a is None or b is None:
        return float("inf")
    return float((a - b).abs().max() / first.abs().max())


def kernel_distance(first: torch.Tensor, second: torch.Tensor, grid: int = 64) -> float:
    """How differently two PSFs blur: the L2 distance between their frequency responses' magnitudes (the
    MTFs) on a ``grid`` x ``grid`` frequency grid. Shift-invariant, so it compares blurs of any support
    and centring; 0 for the same blur. Used to pick the shipped model whose blur is nearest a user's PSF.

    >>> from sei.physics import get_kernel
    >>> near = kernel_distance(get_kernel("Gaussian_R2"), get_kernel("Gaussian_R3"))
    >>> far = kernel_distance(get_kernel("Gaussian_R2"), get_kernel("Gaussian_R1"))
    >>> kernel_distance(get_kernel("Box_R3"), get_kernel("Box_R3")), near < far
    (0.0, True)
    """
    size = max(grid, *first.shape[-2:], *second.shape[-2:])

    def mtf(kernel: torch.Tensor) -> torch.Tensor:
        kernel = kernel.to(torch.float64)
        return torch.fft.rfft2(kernel / kernel.sum(), s=(size, size)).abs()

    return float((mtf(first) - mtf(second)).norm())


def kernels_match(first: torch.Tensor, second: torch.Tensor, tolerance: float = KERNEL_TOLERANCE) -> bool:
    """Whether two kernels are the same PSF within ``tolerance`` (relative to the peak).

    >>> from sei.physics import get_kernel
    >>> gaussian = get_kernel("Gaussian_R2")
    >>> kernels_match(gaussian, gaussian.float()), kernels_match(gaussian, get_kernel("Gaussian_R1"))
    (True, False)
    """
    return kernel_difference(first, second) <= tolerance


def check_kernel(stored: torch.Tensor, requested: Any, source: str) -> None:
    """A user's ``--kernel`` against the kernel a model or run holds: equal values pass whatever the
    name or path; a different PSF is a one-line error that says by how much."""
    from sei.physics import get_kernel

    if requested is None:
        return
    wanted = get_kernel(requested)
    difference = kernel_difference(stored, wanted)
    if difference > KERNEL_TOLERANCE:
        how = (
            "a different support"
            if difference == float("inf")
            else f"values differ by up to {difference:.1%} of the peak"
        )
        raise SeiUserError(
            f"{source} was trained for another kernel than --kernel {requested} ({tuple(stored.shape)} vs "
            f"{tuple(wanted.shape)}, {how}); drop --kernel to use the stored one, or train for this kernel"
        )

"""Forward models: kernels, circular FFT blur, bicubic super-resolution, Gaussian or Poisson-Gaussian noise.

:class:`Operator` is the public type of every operator (a deepinv ``LinearPhysics``): write
``physics: Operator`` in signatures.

``make_physics(task, kernel=None, sr_factor=None, noise_level=5, noise_model="gaussian", gain=None)`` is
the entry point (the defaults are :mod:`sei.problem`'s).
``valid_blur(x, kernel)`` blurs the way a camera does (a 'valid', non-circular convolution, ``k - 1``
pixels smaller per axis); ``valid_crop`` cuts the matching region out of the sharp image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sei.errors import SeiUserError
from sei.physics.functional import valid_blur, valid_crop
from sei.physics.kernels import KERNEL_FORMS, box_kernel, gaussian_kernel, get_kernel, kernel_name
from sei.physics.operators import BicubicSR, Blur, Operator, gaussian_like
from sei.problem import (
    DEFAULT_KERNEL,
    DEFAULT_NOISE_LEVEL,
    DEFAULT_NOISE_MODEL,
    NOISE_MODELS,
    SR_FACTORS,
    TASKS,
    check_sr_factor,
    check_task,
)
from sei.runtime import derive_seed

__all__ = [
    "DEFAULT_KERNEL",
    "DEFAULT_NOISE_LEVEL",
    "DEFAULT_NOISE_MODEL",
    "KERNEL_FORMS",
    "NOISE_MODELS",
    "SR_FACTORS",
    "TASKS",
    "BicubicSR",
    "Blur",
    "Operator",
    "box_kernel",
    "gaussian_kernel",
    "gaussian_like",
    "get_kernel",
    "kernel_name",
    "make_physics",
    "measurement_seed",
    "valid_blur",
    "valid_crop",
]


def make_physics(
    task: str,
    kernel: str | Path | torch.Tensor | None = None,
    sr_factor: int | None = None,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    noise_model: str = DEFAULT_NOISE_MODEL,
    gain: float | None = None,
) -> Blur | BicubicSR:
    """Build the forward operator of a task.

    :param str task: ``"deblurring"`` or ``"sr"``.
    :param kernel: deblurring kernel name (``Gaussian_R2``), file path or tensor; default Gaussian_R2.
    :param int sr_factor: super-resolution factor (2, 3, 4 or 8); default 2.
    :param float noise_level: Gaussian noise std in 8-bit units.
    :param str noise_model: ``"gaussian"`` (default) or ``"poisson-gaussian"`` (:mod:`sei.physics.noise`).
    :param float gain: Poisson gain in 8-bit units (one photon's intensity); Poisson-Gaussian noise only.

    >>> make_physics("sr", sr_factor=4).describe()
    {'task': 'sr', 'sr_factor': 4, 'noise_level': 5.0}
    """
    if noise_level is None or noise_level < 0:
        raise SeiUserError(f"noise level must be >= 0, got {noise_level}")
    if check_task(task) == "deblurring":
        if sr_factor not in (None, 1):
            raise SeiUserError("--sr_factor applies to the sr task only; use --kernel for deblurring")
        spec = DEFAULT_KERNEL if kernel is None else kernel
        return Blur(
            get_kernel(spec),
            noise_level=noise_level,
            kernel_label=kernel_name(spec),
            noise_kind=noise_model,
            gain=gain,
        )
    if kernel is not None:
        raise SeiUserError(
            "--kernel applies to the deblurring task only; super-resolution uses bicubic downsampling"
        )
    return BicubicSR(check_sr_factor(sr_factor), noise_level=noise_level, noise_kind=noise_model, gain=gain)


def measurement_seed(identity: str, base_seed: int = 0) -> int:
    """A stable 63-bit seed from an image's identity (e.g. ``div2k/0801``), the same on every machine.

    >>> measurement_seed("div2k/0801") == measurement_seed("div2k/0801")
    True
    """
    return derive_seed(base_seed, identity)

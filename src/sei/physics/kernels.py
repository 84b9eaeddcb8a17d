"""Blur kernels: by name (``Gaussian_R2``, ``Box_R3``) or from a file.

Kernels are built in float64 and normalised to sum 1; operators cast them when they build
their optical transfer function.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from sei.errors import SeiUserError

_NAME = re.compile(r"^(gaussian|box)_r(\d+(?:\.\d+)?)$", re.IGNORECASE)
KERNEL_FORMS = (
    "Gaussian_R<std> (e.g. Gaussian_R2, Gaussian_R1.5), Box_R<radius> (e.g. Box_R3), or a .npy/.pt/.png file"
)


def gaussian_kernel(std: float) -> torch.Tensor:
    """Isotropic Gaussian of standard deviation ``std`` pixels on a (6 std + 1) grid, odd size.

    :Examples:

    >>> k = gaussian_kernel(2.0)
    >>> tuple(k.shape), round(float(k.sum()), 12)
    ((13, 13), 1.0)
    """
    if not std > 0:
        raise SeiUserError(f"Gaussian kernel std must be positive, got {std}")
    size = math.ceil(6 * std + 1)
    size += 1 - size % 2
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    profile = torch.exp(-(offsets**2) / (2 * std**2))
    kernel = profile[:, None] * profile[None, :]
    return kernel / kernel.sum()


def box_kernel(radius: int) -> torch.Tensor:
    """Uniform (2 radius + 1)^2 kernel.

    >>> box_kernel(3).shape
    torch.Size([7, 7])
    """
    if radius != int(radius) or radius < 1:
        raise SeiUserError(f"Box kernel radius must be a positive integer, got {radius}")
    size = 2 * int(radius) + 1
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)


def load_kernel_file(path: Path) -> torch.Tensor:
    """Read a 2-D kernel from .npy, .pt/.pth (tensor, loaded with weights_only) or a grayscale image."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, torch.Tensor):
                raise SeiUserError(f"kernel file {path} must hold a tensor, found {type(loaded).__name__}")
            array = loaded.double().numpy()
        else:
            from PIL import Image

            with Image.open(path) as image:
                if image.mode not in ("L", "I", "I;16", "F"):
                    image = image.convert("L")
                array = np.asarray(image, dtype=np.float64)
    except SeiUserError:
        raise
    except Exception as error:  # unreadable file: report it as a user error with the cause
        raise SeiUserError(f"cannot read kernel file {path}: {error}") from error
    kernel = torch.as_tensor(np.asarray(array, dtype=np.float64))
    return normalise_kernel(kernel, source=str(path))


def normalise_kernel(kernel: torch.Tensor, source: str = "kernel") -> torch.Tensor:
    """Check that a kernel is 2-D, finite and sums to a non-zero value; return it in float64 summing to 1."""
    kernel = torch.as_tensor(kernel).to(torch.float64)
    if kernel.ndim == 3 and kernel.shape[0] == 1:
        kernel = kernel[0]
    if kernel.ndim != 2:
        raise SeiUserError(f"{source}: a blur kernel must be 2-D, got shape {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all():
        raise SeiUserError(f"{source}: the kernel contains NaN or infinite values")
    total = kernel.sum()
    if abs(float(total)) < 1e-12:
        raise SeiUserError(f"{source}: the kernel sums to zero and cannot be normalised")
    return kernel / total


def get_kernel(spec: str | Path | torch.Tensor) -> torch.Tensor:
    """Resolve a kernel name, a file path or a tensor to a normalised float64 kernel.

    >>> get_kernel("Gaussian_R1").shape, get_kernel("box_r2").shape
    (torch.Size([7, 7]), torch.Size([5, 5]))
    """
    if isinstance(spec, torch.Tensor):
        return normalise_kernel(spec)
    text = str(spec)
    match = _NAME.match(text)
    if match:
        family, value = match.group(1).lower(), float(match.group(2))
        if family == "gaussian":
            return gaussian_kernel(value)
        if value != int(value):
            raise SeiUserError(
                f"unknown kernel {text!r}: Box_R needs an integer radius. Valid forms: {KERNEL_FORMS}"
            )
        return box_kernel(int(value))
    path = Path(text).expanduser()
    if path.is_file():
        return load_kernel_file(path)
    raise SeiUserError(f"unknown kernel {text!r}. Valid forms: {KERNEL_FORMS}")


def is_kernel_name(text: str) -> bool:
    """Whether ``text`` names a built-in kernel (``Gaussian_R2``, ``box_r3``) rather than a file.

    >>> is_kernel_name("Gaussian_R1.5"), is_kernel_name("psf.npy")
    (True, False)
    """
    return bool(_NAME.match(str(text)))


def kernel_name(spec: str | Path | torch.Tensor) -> str:
    """A canonical label for metadata: ``Gaussian_R2``, ``Box_R3``, or the file name."""
    if isinstance(spec, torch.Tensor):
        return "custom"
    match = _NAME.match(str(spec))
    if match:
        family = "Gaussian" if match.group(1).lower() == "gaussian" else "Box"
        value = float(match.group(2))
        return f"{family}_R{int(value) if value == int(value) else value}"
    return Path(str(spec)).name

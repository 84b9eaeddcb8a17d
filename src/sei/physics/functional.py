"""Pure tensor functions behind the operators: OTFs, FFT blur, bicubic resampling matrices.

All images are ``(B, C, H, W)``. The ``nn.Module`` operators in :mod:`sei.physics.operators` only
cache what these functions build.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psf_to_otf(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Optical transfer function of a kernel for circular convolution on an ``height x width`` grid.

    The kernel's centre (index ``k // 2``) goes to pixel (0, 0); entries are wrapped modulo the image
    size, so a kernel larger than the image is still a valid circular blur. Returns ``rfft2`` of the
    padded PSF, shape ``(height, width // 2 + 1)``, complex, in the kernel's precision.
    """
    kh, kw = kernel.shape
    rows = (torch.arange(kh, device=kernel.device) - kh // 2) % height
    cols = (torch.arange(kw, device=kernel.device) - kw // 2) % width
    padded = torch.zeros(height, width, dtype=kernel.dtype, device=kernel.device)
    padded.index_put_((rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)), kernel, accumulate=True)
    return torch.fft.rfft2(padded)


def fft_blur(x: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
    """Circular convolution ``k * x`` through the FFT; same size as ``x``."""
    return torch.fft.irfft2(torch.fft.rfft2(x) * otf, s=x.shape[-2:])


def fft_blur_adjoint(y: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of :func:`fft_blur`: circular correlation (multiplication by ``conj(OTF)``)."""
    return torch.fft.irfft2(torch.fft.rfft2(y) * otf.conj(), s=y.shape[-2:])


def bicubic_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by ``factor``; output ``floor(H / factor) x floor(W / factor)``.

    Uses the scale factor (not the output size) so the kernel is the same whatever the image size.
    """
    return F.interpolate(x, scale_factor=1.0 / factor, mode="bicubic", antialias=True, align_corners=False)


def bicubic_upsample(y: torch.Tensor, factor: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Plain bicubic upsampling by ``factor`` (the cheap pseudo-inverse and the ``up`` baseline)."""
    if size is None:
        return F.interpolate(y, scale_factor=float(factor), mode="bicubic", align_corners=False)
    return F.interpolate(y, size=size, mode="bicubic", align_corners=False)


def downsampling_matrix(length: int, factor: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The 1-D matrix ``R`` (``floor(length / factor) x length``) of antialiased bicubic downsampling.

    torch's antialiased bicubic resampling is separable, so ``bicubic_downsample(x) = R_h x R_w^T``
    for every channel. The matrix is read off the operator itself: column ``i`` is the response to the
    ``i``-th unit vector (the other axis is constant, which resampling leaves unchanged). That other
    axis is ``2 * factor`` long: torch mishandles a resampled axis of output length 1.
    """
    eye = torch.eye(length, dtype=dtype, device=device)  # (length, length): row i = e_i
    probe = eye[:, None, :, None].expand(length, 1, length, 2 * factor).contiguous()
    response = bicubic_downsample(probe, factor)  # (length, 1, length // factor, 1)
    return response[:, 0, :, 0].T.contiguous()


def separable_apply(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols^T`` on the last two axes."""
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))

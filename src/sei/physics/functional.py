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


def downsampling_matrix(
    length: int, factor: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
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


def valid_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'Valid' (non-circular) convolution ``k * x``: how a camera blurs a scene that continues past the
    frame. Only the output pixels whose whole support lies inside ``x`` are kept, so the output is
    ``(H - kh + 1) x (W - kw + 1)``; it equals :func:`valid_crop` of the circular blur (computed that way,
    through the FFT) and ``scipy.signal.convolve2d(x, k, mode="valid")``.
    """
    kh, kw = kernel.shape
    height, width = x.shape[-2:]
    if kh > height or kw > width:
        raise ValueError(f"a {kh}x{kw} kernel leaves no valid pixel of a {height}x{width} image")
    precision = torch.float64 if x.dtype == torch.float64 else torch.float32
    otf = psf_to_otf(kernel.to(device=x.device, dtype=torch.float64), height, width)
    complex_dtype = torch.complex128 if precision == torch.float64 else torch.complex64
    return valid_crop(fft_blur(x.to(precision), otf.to(complex_dtype)), (kh, kw)).to(x.dtype)


def valid_crop(x: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """The part of an image (or of its circular blur) that :func:`valid_blur` keeps: ``kh - 1 - kh // 2``
    rows at the top and ``kh // 2`` at the bottom go (and likewise for columns), the kernel's centre
    being at index ``k // 2`` as in :func:`psf_to_otf`."""
    kh, kw = kernel_size
    height, width = x.shape[-2:]
    return x[..., kh - 1 - kh // 2 : height - kh // 2, kw - 1 - kw // 2 : width - kw // 2]


def smooth_periodic_extension(y: torch.Tensor, margin: int) -> torch.Tensor:
    """Pad ``y`` by ``margin`` pixels on every side so that the result is smooth *across the wrap-around*
    (Liu and Jia 2008, "Reducing boundary artifacts in image deconvolution"; deepinv's ``liu_jia_pad``).

    An FFT treats an image as periodic, so a measurement whose opposite borders differ (any real photo)
    has a jump at the wrap that a deconvolution turns into ringing. The added band interpolates smoothly
    (harmonic inpainting) from each border to the opposite one; deconvolve the extended image and crop
    ``margin`` pixels off every side with :func:`crop_border`. Output ``(H + 2 margin, W + 2 margin)``.
    """
    from deepinv.physics.functional import liu_jia_pad

    if margin <= 0:
        return y
    working = y if y.dtype in (torch.float32, torch.float64) else y.float()
    return liu_jia_pad(working, padding=(margin, margin)).to(y.dtype)


def crop_border(x: torch.Tensor, margin: int) -> torch.Tensor:
    """Undo :func:`smooth_periodic_extension`: drop ``margin`` pixels on every side."""
    if margin <= 0:
        return x
    return x[..., margin:-margin, margin:-margin]


def wrap_jump_ratio(y: torch.Tensor) -> float:
    """How much larger the jump across the wrap-around (first vs last row, first vs last column) is than
    the differences between neighbouring pixels next to the borders (mean squares over the batch).

    About 1 for a circular blur (the first and last rows are neighbours on the torus); much larger for
    a measurement of a scene that continues past the frame, whose opposite borders are unrelated.
    """
    y = y.double()
    wrap = ((y[..., 0, :] - y[..., -1, :]) ** 2).mean() + ((y[..., :, 0] - y[..., :, -1]) ** 2).mean()
    near = (
        ((y[..., 0, :] - y[..., 1, :]) ** 2).mean()
        + ((y[..., -1, :] - y[..., -2, :]) ** 2).mean()
        + ((y[..., :, 0] - y[..., :, 1]) ** 2).mean()
        + ((y[..., :, -1] - y[..., :, -2]) ** 2).mean()
    ) / 2
    return float(wrap / near.clamp_min(1e-20))

"""The metric protocol of the paper, in one place (the CLI, tests and benchmarks all report these).

Protocol ``"paper"`` (default): estimate and reference clamped to [0, 1] and quantised to 8 bits;
PSNR on the luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (full range), data range 1, no border shaving;
SSIM on the same Y with a Gaussian window (11 x 11, sigma 1.5). For SR both images are cropped to
their common size. Protocol ``"sr-literature"``: MATLAB's BT.601 ``Y`` in [16, 235] and ``r`` pixels
shaved from each border, which makes numbers comparable with other SR papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

SSIM_IMPLEMENTATION = (
    "sei.evaluation.ssim: Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, valid region only (equals "
    "skimage structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
    "data_range=1))"
)
PROTOCOLS = ("paper", "sr-literature")


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the nearest 8-bit level (as saving a PNG would)."""
    return image.clamp(0, 1).mul(255).round().div(255)


def luma(image: torch.Tensor, protocol: str = "paper") -> torch.Tensor:
    """``(..., C, H, W) -> (..., 1, H, W)``: the Y channel used by the metrics (grayscale passes through)."""
    if image.shape[-3] == 1:
        return image
    red, green, blue = image.unbind(-3)
    if protocol == "paper":
        y = 0.299 * red + 0.587 * green + 0.114 * blue
    elif protocol == "sr-literature":
        y = (16.0 + 65.481 * red + 128.553 * green + 24.966 * blue) / 255.0
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    return y.unsqueeze(-3)


def psnr(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(torch.mean((estimate.double() - reference.double()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _gaussian_profile(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian; the 11 x 11 window is its outer product with itself."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    return profile / profile.sum()


def ssim(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM of two single-channel images ``(1, H, W)`` over the valid region of the window.

    The five local moments are filtered in one batch, and the Gaussian window as two 1-D passes (it is
    separable): 22 taps a pixel instead of 121, the same numbers to float64 rounding. A float64 2-D
    convolution has no fast path on the CPU; the 2-D form took most of ``sei demo``'s time."""
    x = estimate.double().reshape(1, 1, *estimate.shape[-2:])
    y = reference.double().reshape(1, 1, *reference.shape[-2:])
    profile = _gaussian_profile().to(x.device)
    if min(x.shape[-2:]) < profile.numel():
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    moments = torch.cat([x, y, x * x, y * y, x * y])
    moments = F.conv2d(moments, profile.view(1, 1, -1, 1))
    mu_x, mu_y, xx, yy, xy = F.conv2d(moments, profile.view(1, 1, 1, -1))
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(value.mean())


def image_metrics(
    estimate: torch.Tensor, reference: torch.Tensor, protocol: str = "paper", shave: int = 0
) -> tuple[float, float]:
    """(PSNR, SSIM) of one image pair ``(C, H, W)`` under the protocol; crops to the common size."""
    height = min(estimate.shape[-2], reference.shape[-2])
    width = min(estimate.shape[-1], reference.shape[-1])
    # quantise in float32 exactly as writing an 8-bit PNG does (sei.imageio.to_uint8), then work in float64
    estimate = quantize(estimate[..., :height, :width].float()).double()
    reference = quantize(reference[..., :height, :width].float()).double()
    est_y, ref_y = luma(estimate, protocol), luma(reference, protocol)
    if shave:
        est_y, ref_y = est_y[..., shave:-shave, shave:-shave], ref_y[..., shave:-shave, shave:-shave]
    return psnr(est_y, ref_y), ssim(est_y, ref_y)


@dataclass
class Evaluation:
    """Per-image metrics and their summary."""

    protocol: str = "paper"
    records: list[dict] = field(default_factory=list)

    def add(self, identity: str, psnr_db: float, ssim_value: float) -> None:
        self.records.append({"identity": identity, "psnr": psnr_db, "ssim": ssim_value})

    @staticmethod
    def _std(values: torch.Tensor) -> float:
        return float(values.std(unbiased=False)) if len(values) > 1 else 0.0

    def summary(self) -> dict[str, float | int | str]:
        psnrs = torch.tensor([r["psnr"] for r in self.records], dtype=torch.float64)
        ssims = torch.tensor([r["ssim"] for r in self.records], dtype=torch.float64)
        return {
            "n": len(self.records),
            "psnr_mean": float(psnrs.mean()) if len(psnrs) else math.nan,
            "psnr_std": self._std(psnrs),
            "ssim_mean": float(ssims.mean()) if len(ssims) else math.nan,
            "ssim_std": self._std(ssims),
            "protocol": self.protocol,
            "ssim_implementation": SSIM_IMPLEMENTATION,
        }

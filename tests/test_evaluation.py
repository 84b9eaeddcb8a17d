"""The metric protocol: Y-PSNR after 8-bit quantisation, SSIM equal to scikit-image's Gaussian SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sei.evaluation import Evaluation, image_metrics, luma, psnr, quantize, ssim


def test_psnr_known_value():
    reference = torch.zeros(1, 8, 8)
    estimate = torch.full((1, 8, 8), 0.1)
    assert psnr(estimate, reference) == pytest.approx(20.0)
    assert psnr(reference, reference) == math.inf


def test_ssim_matches_scikit_image(astronaut):
    from skimage.metrics import structural_similarity

    reference = luma(astronaut[:, :120, :100])
    noisy = (
        reference + 0.05 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    expected = structural_similarity(
        noisy[0].double().numpy(),
        reference[0].double().numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ssim(noisy, reference) == pytest.approx(expected, abs=1e-10)


def test_image_metrics_protocol(astronaut):
    reference = astronaut[:, :64, :80]
    estimate = (reference + 0.02).clamp(0, 1)
    value, _ = image_metrics(estimate, reference)
    # independent computation: quantise with numpy in float32 (as writing a PNG does), then Y, then PSNR
    q = lambda t: (np.round(np.clip(t.numpy(), 0, 1) * np.float32(255)) / np.float32(255)).astype(np.float64)  # noqa: E731
    weights = np.array([0.299, 0.587, 0.114])[:, None, None]
    est_y, ref_y = (q(estimate) * weights).sum(0), (q(reference) * weights).sum(0)
    assert value == pytest.approx(10 * np.log10(1 / np.mean((est_y - ref_y) ** 2)), abs=1e-9)
    # SR: larger estimate is cropped to the common size
    bigger = torch.cat([estimate, torch.zeros(3, 2, 80)], 1)
    assert image_metrics(bigger, reference)[0] == pytest.approx(value)
    # the SR-literature protocol shaves borders and uses BT.601 studio-range Y
    assert image_metrics(estimate, reference, protocol="sr-literature", shave=2)[0] != value


def test_quantize_and_summary():
    assert torch.equal(quantize(torch.tensor([-0.2, 0.5, 1.3])), torch.tensor([0.0, 128 / 255, 1.0]))
    evaluation = Evaluation()
    evaluation.add("a", 30.0, 0.9)
    evaluation.add("b", 32.0, 0.8)
    summary = evaluation.summary()
    assert summary["n"] == 2 and summary["psnr_mean"] == 31.0 and summary["psnr_std"] == 1.0

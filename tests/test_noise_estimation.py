"""The noise-level estimator on real photographs, blurred or downsampled and noised as sei does.

Tolerances are the ones docs/noise_level.md states: the physics-aware spectral estimator is within 5 %
on blur at every level; the patch PCA estimator on super-resolution within 15 % from level 5 up, and
only within a factor 2 at level 1 (sharp low-resolution texture is indistinguishable from weak noise).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sei.errors import SeiUserError
from sei.noise_estimation import NoiseEstimate, estimate_noise_level
from sei.physics import Blur, make_physics


def _quantise(y: torch.Tensor) -> torch.Tensor:
    """What an 8-bit PNG of the measurement holds."""
    return y.clamp(0, 1).mul(255).round().div(255)


@pytest.fixture(scope="module")
def rocket() -> torch.Tensor:
    """scikit-image's rocket (a training photograph), (3, 427, 640); its central crop has almost no
    saturated pixels."""
    from skimage import data

    return torch.from_numpy(data.rocket()).permute(2, 0, 1).double().div(255).contiguous()


def _relative_error(estimate: NoiseEstimate, level: float) -> float:
    return abs(estimate.level / level - 1)


@pytest.mark.parametrize("quantised", [False, True])
@pytest.mark.parametrize("level", [1, 5, 20])
def test_blur_spectral_within_5_percent(rocket, level, quantised):
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=level)
    y = physics.measure(rocket[None, :, 100:356, 128:384], seed=level)[0]
    y = _quantise(y) if quantised else y
    estimate = estimate_noise_level(y, physics)
    assert estimate.method == "spectral"
    assert _relative_error(estimate, level) < 0.05, estimate


@pytest.mark.parametrize("level", [1, 5, 20])
def test_valid_blur_of_a_larger_scene(rocket, level):
    """A non-circular measurement: the circular blur of a larger crop with the kernel margin cut away,
    so the borders do not wrap. Without the window, their discontinuity would leak into the noise-only
    frequencies."""
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=level)
    margin = physics.margin
    scene = rocket[None, :, 100 - margin : 356 + margin, 128 - margin : 384 + margin]
    y = _quantise(physics.measure(scene, seed=10 + level)[0, :, margin:-margin, margin:-margin])
    assert _relative_error(estimate_noise_level(y, physics), level) < 0.05


def test_defocus_disk(rocket):
    """A uniform disk has sidelobes: only thin rings of its OTF are about 0, and they suffice."""
    grid = torch.arange(-3, 4, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= 9).double()
    physics = Blur(disk / disk.sum(), noise_level=2)
    y = _quantise(physics.measure(rocket[None, :, 100:356, 128:384], seed=3)[0])
    estimate = estimate_noise_level(y, physics)
    assert estimate.method == "spectral" and _relative_error(estimate, 2) < 0.05


@pytest.mark.parametrize(
    ("factor", "level", "tolerance"),
    [(2, 1, 1.0), (2, 5, 0.15), (2, 20, 0.15), (4, 1, 1.0), (4, 5, 0.15), (4, 20, 0.15)],
)
def test_super_resolution_pca(rocket, factor, level, tolerance):
    physics = make_physics("sr", sr_factor=factor, noise_level=level)
    size = 64 * factor * 2  # a 128 x 128 measurement
    x = rocket[None, :, :size, 0:size] if factor == 4 else rocket[None, :, 100 : 100 + size, 128 : 128 + size]
    y = _quantise(physics.measure(x, seed=20 + level)[0])
    estimate = estimate_noise_level(y, physics)
    assert estimate.method == "pca"
    assert _relative_error(estimate, level) < tolerance, estimate


def test_quantisation_rounding_is_not_counted_as_noise(rocket):
    """At level 1, 8-bit rounding adds 1/12 to the variance (+4 % on the level); it is subtracted."""
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=1)
    y = _quantise(physics.measure(rocket[None, :, 100:356, 128:384], seed=7)[0])
    level = estimate_noise_level(y, physics).level
    assert abs(level - 1) < 0.02 < abs(math.sqrt(1 + 1 / 12) - 1)


def test_noise_free_measurement_estimates_near_zero(rocket):
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=0)
    y = physics.A(rocket[None, :, 100:356, 128:384])[0]
    assert estimate_noise_level(y, physics).level < 0.05


def test_pooling_is_the_median_over_images_of_any_sizes(rocket):
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    sizes = [(64, 96), (80, 64), (96, 112)]
    ys = [
        _quantise(physics.measure(rocket[None, :, 100 : 100 + 2 * h, 128 : 128 + 2 * w], seed=h)[0])
        for h, w in sizes
    ]
    estimate = estimate_noise_level(ys, physics)
    assert len(estimate.per_image) == 3
    assert estimate.level == sorted(estimate.per_image)[1]
    assert _relative_error(estimate, 5) < 0.15
    batch = torch.stack([ys[0], ys[0]])  # (B, C, H, W) gives one estimate per image
    assert estimate_noise_level(batch).per_image == pytest.approx([estimate.per_image[0]] * 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.level = 1.0  # type: ignore[misc]


def test_weak_blur_falls_back_to_pca(rocket):
    """A Gaussian of std 0.5 keeps |OTF| > 0.2 everywhere: no noise-only frequencies."""
    physics = make_physics("deblurring", kernel="Gaussian_R0.5", noise_level=10)
    y = _quantise(physics.measure(rocket[None, :, 100:228, 128:256], seed=1)[0])
    estimate = estimate_noise_level(y, physics)
    assert estimate.method == "pca" and _relative_error(estimate, 10) < 0.15


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.full((3, 64, 64), 0.5), "the measurement is constant"),
        (torch.full((3, 64, 64), 0.5).index_put_((torch.tensor([0]),), torch.tensor(0.5 + 1e-8)), "constant"),
        (
            torch.rand(3, 64, 64).index_put_(
                (torch.tensor([0]), torch.tensor([3])), torch.tensor(float("nan"))
            ),
            "NaN or infinite",
        ),
        (
            torch.rand(3, 64, 64).index_put_((torch.tensor([1]),), torch.tensor(float("inf"))),
            "NaN or infinite",
        ),
        (torch.rand(3, 8, 200), "too small"),
        (torch.rand(3, 64, 64) * 255, "in [0, 1] scale"),
        (torch.rand(64, 64), "shape"),
    ],
)
def test_user_errors_are_one_line(image, message):
    with pytest.raises(SeiUserError, match="cannot estimate the noise level") as error:
        estimate_noise_level(image)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_method_and_spectral_without_blur():
    with pytest.raises(SeiUserError, match="unknown noise estimation method"):
        estimate_noise_level(torch.rand(3, 64, 64), method="magic")
    with pytest.raises(SeiUserError, match="needs a blur"):
        estimate_noise_level(torch.rand(3, 64, 64), make_physics("sr"), method="spectral")


def test_clipped_measurement_uses_the_patches_without_clipped_pixels(rocket):
    """Over-exposed highlights in every tile: clipping removes their noise and gives them sharp edges
    whose spectrum reaches the noise-only frequencies. The estimate comes from the patches that hold
    no clipped pixel instead."""
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    scene = rocket[None, :, 100:356, 128:384].clone()
    scene[..., 8::24, 8::24] = 80.0  # point highlights, above 1 after the blur
    y = _quantise(physics.measure(scene, seed=5)[0])
    assert float((y == 1).double().mean()) > 0.01
    auto = estimate_noise_level(y, physics)
    spectral_only = estimate_noise_level(y, physics, method="spectral")
    assert auto.method == "pca" and _relative_error(auto, 5) < 0.05
    assert _relative_error(spectral_only, 5) > 0.05

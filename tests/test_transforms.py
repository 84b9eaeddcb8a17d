"""Properties of the random transforms, on non-square odd sizes and real photographs."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
import torch.nn.functional as F
from deepinv.transform.base import TransformParam

from sei.errors import SeiUserError
from sei.transforms import Compose, Rotate, Scale, Shift


def _affine_reference(x: torch.Tensor, factor: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Independent resampling: affine_grid with q = p / s + c (1 - 1/s), same interpolation."""
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = 1 / factor
    theta[:, 1, 1] = 1 / factor
    theta[:, :, 2] = centre * (1 - 1 / factor)[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="reflection", align_corners=False)


@pytest.mark.parametrize("size", [(32, 32), (37, 31), (20, 45)], ids=["square", "tall", "wide"])
@pytest.mark.parametrize("antialias", [False, True], ids=["plain", "antialias"])
def test_scale_factor_one_is_identity(size, antialias):
    x = torch.rand(3, 3, *size)
    out = Scale(factors=[1.0], antialias=antialias)(x, rng=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert (out - x).abs().max() < 1e-5


def test_scale_matches_affine_resampling_on_non_square_photo(coffee_small):
    x = coffee_small[None].repeat(4, 1, 1, 1)  # (4, 3, 96, 128)
    transform = Scale(factors=(0.75, 0.5))
    params = transform._draw(x, torch.Generator().manual_seed(3))
    out = transform.transform(x, **params)
    factor, centre = params["factor"].as_subclass(torch.Tensor), params["centre"].as_subclass(torch.Tensor)
    assert len(set(factor.tolist())) == 2  # both factors drawn in this batch
    reference = _affine_reference(x, factor, centre)
    assert (out - reference).abs().max() < 1e-4
    # The content really shrank: the output's pixel at the centre is the input's pixel at the centre.
    assert (out - x).abs().mean() > 0.05
    # deepinv's Scale with the same factor and centre scrambles the grid when H != W (and is off by a
    # fraction of a pixel): it does not match the reference.
    deepinv_out = dinv.transform.Scale()._transform(x, factor=factor, center=(centre + 1) / 2)
    assert (deepinv_out - reference).abs().mean() > 0.05


def test_scale_antialias_attenuates_aliased_stripes():
    # stripes of period 2.5 px become 1.25 px after shrinking by 2: above Nyquist, they alias
    columns = torch.arange(45, dtype=torch.float32)
    x = (0.5 + 0.5 * torch.cos(2 * torch.pi * columns / 2.5)).expand(2, 3, 33, 45).contiguous()
    factor, centre = torch.tensor([0.5, 0.5]), torch.zeros(2, 2)
    plain = Scale(antialias=False).transform(x, factor=factor, centre=centre)
    smooth = Scale(antialias=True).transform(x, factor=factor, centre=centre)
    assert smooth.std() < 0.7 * plain.std()
    # no blur where nothing shrinks
    same = Scale(factors=[1.0], antialias=True)(x)
    assert (same - x).abs().max() < 1e-5


def test_scale_per_image_and_reproducible():
    x = torch.rand(1, 3, 24, 30).repeat(6, 1, 1, 1)
    transform = Scale()
    first = transform(x, rng=torch.Generator().manual_seed(5))
    again = transform(x, rng=torch.Generator().manual_seed(5))
    other = transform(x, rng=torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert (first[0] - first[1:]).abs().flatten(1).amax(1).min() > 1e-3  # each image its own draw


def test_global_rng_follows_manual_seed():
    x = torch.rand(2, 3, 16, 20)
    for transform in (Scale(), Shift(), Rotate()):
        torch.manual_seed(11)
        first = transform(x)
        torch.manual_seed(11)
        assert torch.equal(first, transform(x))


def test_scale_rejects_bad_factors():
    with pytest.raises(SeiUserError, match="positive"):
        Scale(factors=[0.5, -1.0])


def test_scale_inverse_undoes_enlargement():
    x = torch.rand(2, 3, 40, 34)
    transform = Scale(factors=[2.0])  # an enlargement loses nothing in the middle
    params = transform._draw(x, torch.Generator().manual_seed(0))
    params["centre"] = TransformParam(torch.zeros(2, 2), neg=lambda c: c)
    restored = transform.inverse(transform.transform(x, **params), **params)
    assert (restored - x)[..., 12:-12, 12:-12].abs().max() < 0.05


def test_shift_is_a_circular_roll_with_any_offset():
    x = torch.rand(200, 1, 5, 7)
    transform = Shift()
    params = transform._draw(x, torch.Generator().manual_seed(0))
    out = transform.transform(x, **params)
    for image, shifted, (dy, dx) in zip(x, out, params["shifts"].tolist(), strict=True):
        assert torch.equal(shifted, torch.roll(image, (dy, dx), dims=(-2, -1)))
    assert set(params["shifts"][:, 0].tolist()) == set(range(5))
    assert set(params["shifts"][:, 1].tolist()) == set(range(7))
    assert torch.equal(transform.inverse(out, **params), x)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_rotate_quarter_and_half_turns_land_on_pixel_centres(mode):
    square = torch.rand(2, 3, 16, 16)
    out = Rotate(mode=mode).transform(square, theta=torch.tensor([90.0, 270.0]))
    assert (out[0] - torch.rot90(square[0], 1, (-2, -1))).abs().max() < 1e-4
    assert (out[1] - torch.rot90(square[1], 3, (-2, -1))).abs().max() < 1e-4
    # a non-square image turned by 180 degrees is flipped on both axes: no shear, no stretch
    wide = torch.rand(1, 3, 11, 20)
    half = Rotate(mode=mode).transform(wide, theta=torch.tensor([180.0]))
    assert (half - wide.flip(-1, -2)).abs().max() < 1e-4


def test_rotate_draws_angles_over_the_full_circle():
    params = Rotate()._draw(torch.zeros(500, 1, 8, 8), torch.Generator().manual_seed(0))
    angles = params["theta"]
    assert angles.min() >= 0 and angles.max() < 360
    assert angles.min() < 10 and angles.max() > 350


def test_rotate_multiples_of_90_exact_and_shape_preserving():
    square = torch.rand(64, 2, 9, 9)
    out = Rotate(multiples_of_90=True)(square, rng=torch.Generator().manual_seed(0))
    turns = {
        next(k for k in range(4) if torch.equal(o, torch.rot90(s, k, (-2, -1))))
        for s, o in zip(square, out, strict=True)
    }
    assert turns == {0, 1, 2, 3}
    wide = torch.rand(64, 2, 9, 14)
    out = Rotate(multiples_of_90=True)(wide, rng=torch.Generator().manual_seed(0))
    assert out.shape == wide.shape
    kinds = {
        0 if torch.equal(o, s) else 2 if torch.equal(o, s.flip(-1, -2)) else -1
        for s, o in zip(wide, out, strict=True)
    }
    assert kinds == {0, 2}


def test_compose_applies_in_sequence_and_inverts():
    x = torch.rand(4, 3, 12, 12)
    shift, rotate = Shift(), Rotate(multiples_of_90=True)
    composed = Compose(shift, rotate)
    params = composed._draw(x, torch.Generator().manual_seed(2))
    out = composed.transform(x, **params)
    manual = rotate.transform(
        shift.transform(x, shifts=params["0.shifts"]), quarter_turns=params["1.quarter_turns"]
    )
    assert torch.equal(out, manual)
    assert torch.equal(composed.inverse(out, **params), x)
    seeded = Compose(Shift(), Rotate())
    assert torch.equal(
        seeded(x, rng=torch.Generator().manual_seed(1)), seeded(x, rng=torch.Generator().manual_seed(1))
    )

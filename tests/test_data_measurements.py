"""Seeded measurements and aligned training patches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sei.data import MeasuredImages, MeasurementFolder, PatchDataset
from sei.imageio import write_image
from sei.physics import make_physics


@pytest.fixture(scope="module")
def images(coffee_small, astronaut):
    """Three real, non-square images with odd sizes."""
    return [
        ("test/coffee", coffee_small),
        ("test/astronaut", astronaut[:, 100:201, 150:267].contiguous()),
        ("test/odd", coffee_small[:, :61, :83].contiguous()),
    ]


def test_measurements_identical_across_runs_and_order(images):
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    first = MeasuredImages(images, physics, seed=3)
    second = MeasuredImages(images, make_physics("deblurring", kernel="Gaussian_R2", noise_level=5), seed=3)
    reversed_ = MeasuredImages(images[::-1], physics, seed=3)
    for index in range(len(images)):
        assert torch.equal(first[index][2], second[index][2])
        assert torch.equal(first[index][2], reversed_[len(images) - 1 - index][2])
    other_seed = MeasuredImages(images, physics, seed=4)
    assert not torch.equal(first[0][2], other_seed[0][2])
    noise = first[0][2] - physics.A(images[0][1][None])[0]
    assert abs(noise.std().item() - 5 / 255) < 0.1 * 5 / 255  # one real noise draw of the stated level


def test_sr_measurement_is_exactly_r_times_smaller(images):
    measured = MeasuredImages(images, make_physics("sr", sr_factor=4), seed=0)
    for identity, x, y in measured:
        assert x.shape[-2:] == (4 * y.shape[-2], 4 * y.shape[-1]), identity
    assert measured[2][1].shape == (3, 60, 80)  # 61x83 modcropped


def _batches(patches, workers):
    return list(DataLoader(patches, batch_size=2, num_workers=workers, shuffle=False))


def test_patches_identical_across_workers_and_runs(images):
    physics = make_physics("sr", sr_factor=2)
    patches = PatchDataset(MeasuredImages(images, physics, seed=1), patch_size=24, seed=7)
    patches.set_epoch(5)
    serial, parallel = _batches(patches, 0), _batches(patches, 2)
    again = PatchDataset(
        MeasuredImages(images, make_physics("sr", sr_factor=2), seed=1), patch_size=24, seed=7
    )
    again.set_epoch(5)
    rerun = _batches(again, 0)
    for a, b, c in zip(serial, parallel, rerun, strict=True):
        assert torch.equal(a["y"], b["y"]) and torch.equal(a["x"], b["x"]) and a["identity"] == b["identity"]
        assert torch.equal(a["y"], c["y"]) and torch.equal(a["x"], c["x"])
    assert serial[0]["y"].shape == (2, 3, 24, 24) and serial[0]["x"].shape == (2, 3, 48, 48)
    patches.set_epoch(6)
    assert not torch.equal(_batches(patches, 0)[0]["y"], serial[0]["y"])  # a new epoch crops elsewhere


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_sr_crops_are_aligned(images, factor):
    """A applied to the HR crop gives the LR crop, away from the crop border where A sees outside pixels."""
    physics = make_physics("sr", sr_factor=factor, noise_level=0)
    patches = PatchDataset(MeasuredImages(images, physics), patch_size=12, seed=0)
    border = 3
    for epoch, index in itertools.product(range(3), range(len(patches))):
        patches.set_epoch(epoch)
        item = patches[index]
        predicted = physics.A(item["x"][None])[0]
        assert torch.allclose(
            predicted[:, border:-border, border:-border],
            item["y"][:, border:-border, border:-border],
            atol=1e-5,
        )
    shifted = physics.A(torch.roll(patches[0]["x"], factor, dims=-1)[None])[0]
    assert not torch.allclose(
        shifted[:, border:-border, border:-border],
        patches[0]["y"][:, border:-border, border:-border],
        atol=1e-3,
    )


def test_deblurring_crops_are_aligned(images):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=0)
    patches = PatchDataset(MeasuredImages(images, physics), patch_size=32)
    item = patches[1]
    margin = physics.margin
    predicted = physics.A(item["x"][None])[0]
    assert torch.allclose(
        predicted[:, margin:-margin, margin:-margin], item["y"][:, margin:-margin, margin:-margin], atol=1e-5
    )


def test_small_image_is_reflect_padded_never_zero():
    small = [
        (
            "test/tiny",
            torch.full((3, 20, 20), 0.5)
            + 0.4 * torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0)),
        )
    ]
    physics = make_physics("sr", sr_factor=2, noise_level=0)
    with pytest.warns(UserWarning, match="reflect-padded"):
        patches = PatchDataset(MeasuredImages(small, physics), patch_size=48)
    item = patches[0]
    assert item["y"].shape == (3, 48, 48) and item["x"].shape == (3, 96, 96)
    assert item["y"].amin(dim=(0, 2)).min() > 0.3 and item["x"].amin(dim=(0, 2)).min() > 0.3  # no black rows


def test_measurement_folder_trains_without_ground_truth(tmp_path):
    y = torch.linspace(-0.05, 1.05, 3 * 40 * 50).reshape(3, 40, 50)
    write_image(y, tmp_path / "a" / "shot.npy")
    Image.fromarray(np.full((30, 36), 77, dtype=np.uint8)).save(tmp_path / "gray.png")
    folder = MeasurementFolder(tmp_path)
    assert [identity for identity, _, _ in folder] == ["measurement/a/shot.npy", "measurement/gray.png"]
    assert folder[0][1] is None and torch.equal(folder[0][2], y) and folder[1][2].shape == (3, 30, 36)
    batch = next(iter(DataLoader(PatchDataset(folder, patch_size=24), batch_size=2)))
    assert set(batch) == {"y", "identity"} and batch["y"].shape == (2, 3, 24, 24)
    assert len(MeasurementFolder(tmp_path / "gray.png")) == 1

"""Image files as real folders hold them: gray, 16-bit, alpha, tiny, rotated, float, DICOM, broken."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sei.errors import SeiUserError
from sei.imageio import list_images, read_dicom, read_image, resize_short_side, write_image


def test_grayscale_becomes_rgb_or_stays_single_channel(tmp_path):
    array = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    Image.fromarray(array).save(tmp_path / "gray.png")
    rgb = read_image(tmp_path / "gray.png")
    assert rgb.shape == (3, 20, 30)
    assert torch.equal(rgb[0], rgb[2])
    assert torch.allclose(rgb[0], torch.from_numpy(array).float() / 255)
    assert read_image(tmp_path / "gray.png", channels=None).shape == (1, 20, 30)


def test_16_bit_png_is_scaled_by_65535(tmp_path):
    array = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(3, 0)
    Image.fromarray(array).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = read_image(tmp_path / "deep.png", channels=None)
    assert image.shape == (1, 3, 4)
    assert torch.allclose(image[0, 0], torch.tensor([0, 257, 32768, 65535]) / 65535.0)


def test_rgba_drops_alpha_and_keeps_colour(tmp_path):
    array = np.zeros((20, 20, 4), dtype=np.uint8)
    array[..., 0], array[..., 1], array[..., 2], array[..., 3] = 200, 100, 50, 0  # fully transparent
    Image.fromarray(array, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.shape == (3, 20, 20)
    assert torch.allclose(image[:, 5, 5], torch.tensor([200, 100, 50]) / 255.0)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(array).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "rotated.jpg")
    assert image.shape == (3, 40, 20)  # displayed upright: portrait
    assert image[:, :15].mean() > 0.9 and image[:, 25:].mean() < 0.1  # the white half is now on top


def test_colour_to_luma_uses_bt601(tmp_path):
    Image.fromarray(np.full((4, 4, 3), (255, 0, 0), dtype=np.uint8)).save(tmp_path / "red.png")
    assert torch.allclose(read_image(tmp_path / "red.png", channels=1), torch.full((1, 4, 4), 0.299))


def test_npy_measurement_round_trip_is_float_and_unclipped(tmp_path):
    measurement = torch.linspace(-0.1, 1.2, 3 * 5 * 7).reshape(3, 5, 7)
    write_image(measurement, tmp_path / "y.npy")
    assert torch.equal(read_image(tmp_path / "y.npy"), measurement)


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SeiUserError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(SeiUserError, match="not found"):
        read_image(tmp_path / "absent.png")


def test_dicom_slice_min_max_and_hu_window(tmp_path):
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    path = tmp_path / "slice.dcm"
    shutil.copy(source, path)
    image = read_image(path)
    assert image.shape == (3, 128, 128)
    assert image.min() == 0 and image.max() == 1  # default: the slice's full range
    soft_tissue = read_dicom(path, window=(40, 400))
    assert soft_tissue.min() >= 0 and soft_tissue.max() <= 1
    assert (soft_tissue == 1).mean() > 0.01  # bone saturates in a soft-tissue window
    with pytest.raises(SeiUserError, match="width"):
        read_dicom(path, window=(40, 0))


def test_resize_short_side_keeps_aspect_and_range():
    image = torch.rand(3, 120, 200, generator=torch.Generator().manual_seed(0))
    resized = resize_short_side(image, 48)
    assert resized.shape == (3, 48, 80)
    assert resized.min() >= 0 and resized.max() <= 1
    assert resize_short_side(image, 120) is image
    assert resize_short_side(torch.rand(3, 20, 20), 256).shape == (
        3,
        256,
        256,
    )  # small images grow, as the paper's Resize


def test_list_images_is_recursive_sorted_and_skips_hidden(tmp_path):
    for name in ("b.png", "a/c.jpg", ".hidden.png", ".partial-x/d.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/c.jpg", "b.png"]

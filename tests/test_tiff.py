"""TIFF files as scientists have them: 16-bit and float32 samples, grayscale and RGB, multi-page stacks
read as a batch of 2-D images and written back in their own sample type; unsupported layouts are one-line
errors; the CLI keeps the bit depth."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from sei.cli import main
from sei.errors import SeiUserError
from sei.imageio import bit_depth, read_image, read_images, read_tiff, write_like, write_tiff
from sei.physics import make_physics, measurement_seed


def test_16_bit_grayscale_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 65536, size=(17, 23), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", array)
    images, stored = read_tiff(tmp_path / "in.tif", channels=None)
    assert images.shape == (1, 1, 17, 23) and (stored.dtype, stored.channels, stored.pages) == (
        "uint16",
        1,
        1,
    )
    assert torch.allclose(
        images[0, 0].double(), torch.from_numpy(array.astype(np.float64) / 65535), atol=1e-7
    )
    write_like(images, tmp_path / "out.tif", stored)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.uint16 and np.array_equal(back, array)  # 16 bits, every level kept
    assert bit_depth(tmp_path / "out.tif") == 16


def test_float32_rgb_keeps_its_values_unclipped(tmp_path):
    array = (
        np.random.default_rng(1).normal(0.5, 0.8, size=(9, 11, 3)).astype(np.float32)
    )  # below 0 and above 1
    tifffile.imwrite(tmp_path / "in.tif", array, photometric="rgb")
    images, stored = read_tiff(tmp_path / "in.tif", channels=None)
    assert images.shape == (1, 3, 9, 11) and stored.dtype == "float32" and stored.channels == 3
    assert torch.equal(images[0], torch.from_numpy(array).permute(2, 0, 1))
    write_like(images, tmp_path / "out.tif", stored)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.float32 and np.array_equal(back, array)


def test_planar_rgb_reads_like_interleaved_rgb(tmp_path):
    array = np.random.default_rng(2).integers(0, 65536, size=(8, 10, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "contig.tif", array, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(array, -1, 0), photometric="rgb", planarconfig="separate"
    )
    contig, _ = read_tiff(tmp_path / "contig.tif")
    planar, layout = read_tiff(tmp_path / "planar.tif")
    assert layout.channels == 3 and torch.equal(contig, planar)


def test_a_multi_page_stack_is_a_batch_of_2d_images(tmp_path):
    pages = np.stack([np.full((6, 7), 1000 * (k + 1), dtype=np.uint16) for k in range(5)])
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    images, stored = read_tiff(tmp_path / "stack.tif", channels=None)
    assert images.shape == (5, 1, 6, 7) and stored.pages == 5
    assert [round(float(image.mean()) * 65535) for image in images] == [
        1000,
        2000,
        3000,
        4000,
        5000,
    ]  # page order
    write_like(images, tmp_path / "out.tif", stored)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), pages)
    hyperstack = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)  # ImageJ Z, C, Y, X
    tifffile.imwrite(tmp_path / "zc.tif", hyperstack, imagej=True)
    images, stored = read_tiff(tmp_path / "zc.tif", channels=None)
    assert images.shape == (6, 1, 4, 5)
    assert torch.allclose(
        images[4, 0].double() * 65535, torch.from_numpy(hyperstack[1, 1].astype(np.float64))
    )
    with pytest.raises(SeiUserError, match="stack of 5 images"):
        read_image(tmp_path / "stack.tif")


def test_unsupported_layouts_and_lossy_writes_are_user_errors(tmp_path):
    tifffile.imwrite(tmp_path / "complex.tif", np.zeros((4, 4), dtype=np.complex64))
    with pytest.raises(SeiUserError, match="sample type"):
        read_tiff(tmp_path / "complex.tif")
    tifffile.imwrite(
        tmp_path / "samples.tif",
        np.zeros((4, 5, 6), dtype=np.uint16),
        photometric="minisblack",
        planarconfig="contig",
    )
    with pytest.raises(SeiUserError, match="unsupported TIFF layout"):
        read_tiff(tmp_path / "samples.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(SeiUserError, match="broken.tif"):
        read_tiff(tmp_path / "broken.tif")
    images, stored = read_tiff(
        _write(tmp_path / "gray16.tif", np.ones((4, 4), dtype=np.uint16)), channels=None
    )
    with pytest.raises(SeiUserError, match="8 bits"):
        write_like(images.expand(1, 3, 4, 4), tmp_path / "out.jpg", stored)
    stack = torch.rand(2, 1, 4, 4)
    with pytest.raises(SeiUserError, match="multi-page"):
        write_like(stack, tmp_path / "out.png", stored)


def _write(path, array):
    tifffile.imwrite(path, array)
    return path


def test_degrade_keeps_a_16_bit_stack_16_bit_with_poisson_noise(tmp_path, astronaut):
    gray = (astronaut.mean(0)[:64, :64].numpy() * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([gray, gray[::-1].copy()]), photometric="minisblack")
    noise = "--kernel Gaussian_R1 --noise poisson-gaussian --gain 2.55 --noise_level 1".split()
    arguments = ["degrade", str(tmp_path / "stack.tif"), str(tmp_path / "y.tif"), *noise]
    assert main(arguments) == 0
    measured = tifffile.imread(tmp_path / "y.tif")
    assert measured.dtype == np.uint16 and measured.shape == (2, 64, 64)
    physics = make_physics(
        "deblurring", kernel="Gaussian_R1", noise_level=1, noise_model="poisson-gaussian", gain=2.55
    )
    images, _ = read_images(tmp_path / "stack.tif", channels=None)
    for page in range(2):  # each page is its own 2-D image with its own seed
        expected = physics.measure(images[page][None], measurement_seed(f"stack.tif#{page}", 0))[0, 0]
        assert np.abs(measured[page] / 65535 - expected.clamp(0, 1).numpy()).max() <= 0.5 / 65535 + 1e-6
    assert (
        main(arguments[:3] + ["--noise", "poisson-gaussian", "--gain", "0"]) == 2
    )  # argparse rejects gain <= 0


def test_reconstruct_writes_a_16_bit_stack_back_as_16_bit(tmp_path, astronaut):
    gray = (astronaut.mean(0)[:48, :48].numpy() * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "y.tif", np.stack([gray, gray.T.copy(), gray]), photometric="minisblack")
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "y.tif"),
                str(tmp_path / "x.tif"),
                "--model_kind",
                "wiener",
                "--kernel",
                "Gaussian_R1",
            ]
        )
        == 0
    )
    out = tifffile.imread(tmp_path / "x.tif")
    assert out.dtype == np.uint16 and out.shape == (3, 48, 48)
    assert np.array_equal(out[0], out[2]) and not np.array_equal(out[0], out[1])
    assert len(np.unique(out[0])) > 256  # more levels than 8 bits can hold


def test_degrade_refuses_negative_intensities_under_poisson_noise(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "neg.tif", np.full((16, 16), -0.5, dtype=np.float32))
    code = main(
        [
            "degrade",
            str(tmp_path / "neg.tif"),
            str(tmp_path / "y.tif"),
            "--noise",
            "poisson-gaussian",
            "--gain",
            "1",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "intensities >= 0" in error and len(error.splitlines()) == 1
    code = main(["degrade", str(tmp_path / "neg.tif"), str(tmp_path / "y.tif"), "--gain", "1"])
    assert code == 2 and "poisson-gaussian only" in capsys.readouterr().err


def test_write_tiff_refuses_other_channel_counts(tmp_path):
    with pytest.raises(SeiUserError, match="1 or 3 channels"):
        write_tiff(torch.zeros(1, 2, 4, 4), tmp_path / "x.tif", "uint16")

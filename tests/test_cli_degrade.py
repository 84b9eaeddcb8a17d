"""`sei degrade`: round trip on a real image, folders, npy output, and one-line errors."""

from __future__ import annotations

import numpy as np
import torch

from sei.cli import main
from sei.imageio import read_image
from sei.physics import make_physics, measurement_seed


def test_degrade_png_round_trip(astronaut_path, tmp_path, capsys):
    out = tmp_path / "blurry.png"
    assert (
        main(
            [
                "degrade",
                astronaut_path,
                str(out),
                "--task",
                "deblurring",
                "--kernel",
                "Gaussian_R2",
                "--noise_level",
                "5",
            ]
        )
        == 0
    )
    measured = read_image(out)
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    expected = physics.measure(read_image(astronaut_path)[None], seed=measurement_seed("astronaut.png", 0))[0]
    # 8-bit quantisation of the clipped measurement is the only difference
    assert (measured - expected.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6
    # the blur really happened: far from the sharp image, close to the blurred one
    sharp = read_image(astronaut_path)
    assert (measured - physics.A(sharp[None])[0]).pow(2).mean() < (measured - sharp).pow(2).mean() / 10


def test_degrade_npy_is_float_unclipped_hwc(astronaut_path, tmp_path):
    out = tmp_path / "y.npy"
    assert main(["degrade", astronaut_path, str(out), "--task", "sr", "--sr_factor", "4", "--seed", "3"]) == 0
    array = np.load(out)
    assert array.dtype == np.float32 and array.shape == (128, 128, 3)
    physics = make_physics("sr", sr_factor=4)
    expected = physics.measure(read_image(astronaut_path)[None], seed=measurement_seed("astronaut.png", 3))[0]
    assert np.allclose(array, expected.permute(1, 2, 0).numpy(), atol=1e-6)
    assert array.min() < 0 or array.max() > 1  # noise is not clipped (a dark/bright image pixel exceeds)


def test_degrade_folder_is_deterministic(astronaut_path, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    image = read_image(astronaut_path)[:, :64, :80]
    from sei.imageio import write_image

    write_image(image, folder / "a.png")
    write_image(image, folder / "sub" / "b.png")
    for run in ("o1", "o2"):
        assert main(["degrade", str(folder), str(tmp_path / run), "--format", "npy"]) == 0
    a1, a2 = np.load(tmp_path / "o1" / "a.npy"), np.load(tmp_path / "o2" / "a.npy")
    b1 = np.load(tmp_path / "o1" / "sub" / "b.npy")
    assert np.array_equal(a1, a2)
    assert not np.array_equal(a1, b1)  # same content, different identity -> different noise


def test_degrade_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["degrade", str(tmp_path / "missing.png"), str(tmp_path / "o.png")]) == 2
    assert "input not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["degrade", str(bad), str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and err.count("\n") == 1
    good = tmp_path / "good.png"
    from sei.imageio import write_image

    write_image(torch.rand(3, 16, 16), good)
    assert main(["degrade", str(good), str(tmp_path / "o.png"), "--kernel", "Nope_R2"]) == 2
    assert "unknown kernel" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_degrade_valid_boundary_blurs_like_a_camera(astronaut_path, tmp_path, capsys):
    """--boundary valid: a 'valid' convolution, kernel size - 1 smaller, the circular blur's centre."""
    from sei.physics import valid_crop

    out = tmp_path / "y.npy"
    command = ["degrade", astronaut_path, str(out), "--kernel", "Gaussian_R2", "--noise_level", "0"]
    assert main([*command, "--boundary", "valid"]) == 0
    array = np.load(out)
    assert array.shape == (500, 500, 3)
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=0)
    circular = valid_crop(physics.A(read_image(astronaut_path)[None]), (13, 13))[0].permute(1, 2, 0).numpy()
    assert np.abs(array - circular).max() < 1e-5
    assert main(["degrade", astronaut_path, str(tmp_path / "n.npy"), "--boundary", "valid"]) == 0
    assert np.load(tmp_path / "n.npy").shape == (500, 500, 3)
    assert main(["degrade", astronaut_path, str(tmp_path / "s.png"), "--task", "sr", "--boundary=valid"]) == 2
    assert "applies to deblurring" in capsys.readouterr().err

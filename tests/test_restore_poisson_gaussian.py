"""``sei restore`` on photon-limited measurements: --noise poisson-gaussian --gain G|auto --noise_level S|auto
is
accepted and used (PG-SURE training, the noise model in the weights), and its bad inputs are one-line
errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sei.cli import main
from sei.errors import SeiUserError
from sei.physics.noise import check_measurements_nonnegative


@pytest.fixture(scope="module")
def photon_limited(tmp_path_factory, astronaut):
    """Three 16-bit grayscale TIFF crops of the astronaut, blurred (Gaussian_R1) with Poisson-Gaussian noise
    (gain 5.1: 50 photons at full scale; level 2), written by ``sei degrade``; and their sharp versions."""
    import tifffile

    root = tmp_path_factory.mktemp("photon_limited")
    sharp = root / "sharp"
    sharp.mkdir()
    for index, (top, left) in enumerate([(40, 60), (200, 220), (300, 100)]):
        gray = astronaut.mean(0)[top : top + 96, left : left + 112].numpy()
        tifffile.imwrite(sharp / f"s{index}.tif", np.round(gray * 65535).astype(np.uint16))
    argv = ["degrade", str(sharp), str(root / "measured"), "--kernel", "Gaussian_R1"]
    argv += ["--noise", "poisson-gaussian", "--gain", "5.1", "--noise_level", "2"]
    assert main(argv) == 0
    return root


def _restore(root, out, *extra):
    return ["restore", str(root / "measured"), str(out), "--kernel", "Gaussian_R1", *extra]


def test_restore_noise_errors_are_one_line_and_exit_2(photon_limited, tmp_path, capsys):
    root = photon_limited
    offset = tmp_path / "offset"
    offset.mkdir()
    ramp = torch.linspace(0, 1, 128)[None, :, None].expand(1, 128, 128)
    for index in range(2):  # a background-subtracted measurement: a quarter of it well below 0
        np.save(offset / f"m{index}.npy", (ramp - 0.3).permute(1, 2, 0).numpy())
    constant = tmp_path / "constant"
    constant.mkdir()
    np.save(constant / "m.npy", np.full((64, 64, 1), 0.4, dtype=np.float32))
    pg = ["--noise", "poisson-gaussian"]
    cases = [
        (_restore(root, tmp_path / "a", *pg), "needs --gain"),
        (_restore(root, tmp_path / "b", *pg, "--gain", "0"), "gain must be a finite number > 0"),
        (_restore(root, tmp_path / "c", *pg, "--gain", "-2"), "gain must be a finite number > 0"),
        (_restore(root, tmp_path / "d", *pg, "--gain", "photons"), "--gain takes a number"),
        (_restore(root, tmp_path / "e", "--gain", "5"), "--gain applies to --noise poisson-gaussian"),
        (_restore(root, tmp_path / "f", "--gain", "auto"), "--gain applies to --noise poisson-gaussian"),
        (
            ["restore", str(offset), str(tmp_path / "g"), "--kernel", "Gaussian_R1", *pg, "--gain", "5"],
            "Poisson noise needs intensities >= 0",
        ),
        (
            ["restore", str(constant), str(tmp_path / "h"), "--kernel", "Gaussian_R1", *pg, "--gain", "auto"],
            "constant",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        last = err.strip().splitlines()[-1]  # argparse prints its usage before a bad flag value's error
        assert last.startswith("sei restore: error:") and message in last, err
        assert not (tmp_path / argv[2]).joinpath("run").exists()


def test_negative_values_the_gaussian_part_explains_are_accepted():
    generator = torch.Generator().manual_seed(0)
    dark = 2.0 / 255 * torch.randn(1, 1, 256, 256, generator=generator)  # zero signal, level 2: half negative
    check_measurements_nonnegative([dark], noise_level=2.0)
    with pytest.raises(SeiUserError, match="intensities >= 0"):
        check_measurements_nonnegative([dark], noise_level=0.0)  # Poisson alone cannot go below 0
    with pytest.raises(SeiUserError, match="intensities >= 0"):
        check_measurements_nonnegative([dark - 0.1], noise_level=2.0)


def test_training_reuses_the_estimate_it_is_given(photon_limited, capsys):
    """``sei restore`` estimates before it trains: the training keeps those values instead of estimating
    again."""
    from sei.training.config import TrainConfig
    from sei.training.distributed import Distributed
    from sei.training.problem import training_problem

    config = TrainConfig(
        measurements=str(photon_limited / "measured"),
        kernel="Gaussian_R1",
        noise="poisson-gaussian",
        gain="auto",
        gain_estimate=4.0,
        noise_level="auto",
        noise_estimate=3.0,
    )
    resolved, physics, _, _ = training_problem(config, None, Distributed(), torch.device("cpu"))
    assert "estimated" not in capsys.readouterr().err
    assert physics.gain_level == pytest.approx(4.0) and physics.noise_level == pytest.approx(3.0)
    assert resolved.gain_estimate == 4.0 and resolved.noise_estimate == 3.0


@pytest.mark.slow
def test_restore_trains_with_pg_sure_on_auto_noise_and_keeps_16_bits(
    photon_limited, astronaut, tmp_path, capsys
):
    import tifffile

    from sei.evaluation import image_metrics
    from sei.imageio import read_image
    from sei.weights import load_weights_with_physics

    out = tmp_path / "restored"
    argv = _restore(
        photon_limited, out, "--noise", "poisson-gaussian", "--gain", "auto", "--noise_level", "auto"
    )
    assert main([*argv, "--time_limit", "45s", "--ensemble", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("estimated Poisson-Gaussian noise") == 1  # estimated once, before training
    assert "Poisson gain" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["noise_model"] == "poisson-gaussian" and summary["gain_estimated"]
    assert summary["gain"] == pytest.approx(5.1, rel=0.3) and summary["steps"] > 0
    _, metadata, physics = load_weights_with_physics(out / "run" / "weights.safetensors")
    assert physics.poisson and physics.gain_level == pytest.approx(summary["gain"])  # trained with PG-SURE
    gains = []
    for index in range(3):
        restored = tifffile.imread(out / f"s{index}.tif")
        assert restored.dtype == np.uint16 and restored.ndim == 2  # 16-bit grayscale stays 16-bit grayscale
        truth = read_image(photon_limited / "sharp" / f"s{index}.tif")
        measured = read_image(photon_limited / "measured" / f"s{index}.tif")
        result = read_image(out / f"s{index}.tif")
        gains.append(image_metrics(result, truth)[0] - image_metrics(measured, truth)[0])
    assert min(gains) > 1.0, gains
    # --ensemble: the restored images are the symmetry ensemble of the trained weights, as sei reconstruct
    # --ensemble makes it (the reconstruction time it reserved was 8 network passes per tile)
    assert summary["ensemble"] == 8
    weights = str(out / "run" / "weights.safetensors")
    for flags, folder in (([], "plain"), (["--ensemble"], "ensemble")):
        assert (
            main(
                [
                    "reconstruct",
                    str(photon_limited / "measured"),
                    str(tmp_path / folder),
                    "--weights",
                    weights,
                ]
                + flags
                + ["--quiet"]
            )
            == 0
        )
    for index in range(3):
        restored = tifffile.imread(out / f"s{index}.tif").astype(np.int64)
        again = tifffile.imread(tmp_path / "ensemble" / f"s{index}.tif").astype(np.int64)
        plain = tifffile.imread(tmp_path / "plain" / f"s{index}.tif").astype(np.int64)
        assert np.abs(restored - again).max() <= 1 and np.abs(restored - plain).max() > 100


def _png16(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_app_takes_the_poisson_gaussian_model_and_refuses_a_bad_gain(app_server, astronaut):
    """The page's noise model and gain reach the job: a training-free method is told the estimated gain
    (reported), shipped Gaussian weights refuse the Poisson-Gaussian model, and a gain <= 0 is refused."""
    from sei.physics import make_physics

    physics = make_physics(
        "deblurring", kernel="Gaussian_R1", noise_level=1, noise_model="poisson-gaussian", gain=5.1
    )
    measured = physics.measure(astronaut.mean(0)[None, None, 100:260, 100:300], seed=0)[0, 0]
    image = [
        ("images", "cells.png", _png16(np.round(measured.clamp(0, 1).numpy() * 65535).astype(np.uint16)))
    ]
    fields = {"mode": "method", "method": "wiener", "task": "deblurring", "kernel_family": "gaussian"}
    fields |= {"kernel_size": "1", "noise_level": "auto", "noise": "poisson-gaussian", "gain": "auto"}
    status, job = app_server.post_job(fields, image)
    assert status == 201, job
    job = app_server.wait(job["id"])
    assert job["state"] == "done", job
    [message] = [m for m in job["messages"] if m.startswith("Poisson-Gaussian noise: gain")]
    assert float(message.split("gain ")[1].split(",")[0]) == pytest.approx(5.1, rel=0.3)
    status, job = app_server.post_job({**fields, "gain": "0"}, image)
    assert status == 400 and "gain must be a finite number > 0" in job["error"]
    status, job = app_server.post_job({**fields, "noise": "poisson"}, image)
    assert status == 400 and "unknown noise" in job["error"]
    shipped = {"mode": "model", "weights": "sei-gaussian_r2-noise5", "noise_level": "5"}
    status, job = app_server.post_job({**shipped, "noise": "poisson-gaussian", "gain": "5"}, image)
    job = app_server.wait(job["id"]) if status == 201 else job
    assert "poisson-gaussian" in str(job.get("error")).lower(), job  # refused, not ignored


def test_train_refuses_measurements_with_an_offset_under_poisson_noise(tmp_path, capsys):
    ramp = torch.linspace(0, 1, 96)[None, :, None].expand(1, 96, 96)
    for index in range(2):
        np.save(tmp_path / f"m{index}.npy", (ramp - 0.3).permute(1, 2, 0).numpy())
    argv = [
        "train",
        "--measurements",
        str(tmp_path),
        "--kernel",
        "Gaussian_R1",
        "--noise",
        "poisson-gaussian",
    ]
    argv += ["--gain", "5", "--noise_level", "1", "--max_steps", "1", "--out_dir", str(tmp_path / "run")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Poisson noise needs intensities >= 0" in err and "Traceback" not in err

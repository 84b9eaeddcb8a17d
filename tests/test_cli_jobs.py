"""`sei test` and `sei reconstruct` end to end on tiny real data with a briefly trained network."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_crops
from sei.cli import main
from sei.evaluation import image_metrics
from sei.imageio import read_image
from sei.inference import load_reconstructor, tiled
from sei.training import TrainConfig, train


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    return write_crops(astronaut, tmp_path_factory.mktemp("photos"), [(0, 0), (120, 200), (300, 100)], 72, 88)


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    """A small network trained a few supervised steps on Gaussian_R1 deblurring (CLI plumbing; SEI learning is
    tested in test_losses)."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        dataset=str(photos),
        resize=None,
        kernel="Gaussian_R1",
        method="sup",
        patch_size=24,
        batch_size=4,
        max_steps=80,
        lr=1e-3,
        model="unet-small",
        model_options={"channels": 8, "levels": 2},
        val_interval=0,
        val_images=1,
        checkpoint_interval=80,
    )
    train(config, out, progress=False, log="none")
    return out / "weights.safetensors"


def test_test_output_equals_independent_metrics(trained, photos, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert (
        main(
            [
                "test",
                "--weights",
                str(trained),
                "--dataset",
                str(photos),
                "--resize",
                "0",
                "--json",
                str(report),
                "--save_images",
                str(tmp_path / "images"),
                "--per_image",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "N=3" in printed and "SSIM" in printed
    result = json.loads(report.read_text())
    assert result["setup"]["kernel"] == "Gaussian_R1"  # the task came from the weights' metadata
    for record in result["images"]:
        stem = record["identity"].replace("/", "_")
        estimate = read_image(
            tmp_path / "images" / f"{stem}_estimate.png"
        )  # 8-bit, as the protocol quantises
        truth = read_image(photos / record["identity"].split("/", 1)[1])
        assert image_metrics(estimate, truth)[0] == pytest.approx(record["psnr"], abs=1e-6)
        assert (tmp_path / "images" / f"{stem}_side_by_side.png").is_file()


def test_trained_network_beats_the_measurement(trained, photos):
    loaded = load_reconstructor(str(trained), None, None, None, None, None, torch.device("cpu"))
    x = read_image(photos / "crop1.png")
    y = loaded.physics.measure(x[None], seed=1)
    assert image_metrics(loaded.reconstruct(y)[0], x)[0] > image_metrics(y[0], x)[0] + 0.3


def test_tiled_matches_whole_image(trained, astronaut):
    loaded = load_reconstructor(str(trained), None, None, None, None, None, torch.device("cpu"))
    x = astronaut[:, :200, :232]
    y = loaded.physics.measure(x[None], seed=0)
    with torch.no_grad():
        whole = loaded.reconstruct(y)
        pieces = tiled(loaded.reconstruct, y, scale=1, tile=96, overlap=16)
    assert pieces.shape == whole.shape
    assert abs(image_metrics(pieces[0], x)[0] - image_metrics(whole[0], x)[0]) < 0.05


def test_tiled_sr_matches_whole_image(astronaut):
    from sei.models import create_model
    from sei.physics import make_physics

    torch.manual_seed(0)
    network = create_model("unet-small", task="sr", sr_factor=2, channels=8, levels=2).eval()
    physics = make_physics("sr", sr_factor=2)
    x = astronaut[:, :192, :256]
    y = physics.measure(x[None], seed=0)
    with torch.no_grad():
        whole, pieces = network(y), tiled(network, y, scale=2, tile=64, overlap=12)
    assert pieces.shape == whole.shape == (1, 3, 192, 256)
    assert abs(image_metrics(pieces[0], x)[0] - image_metrics(whole[0], x)[0]) < 0.05


def test_reconstruct_folder_and_errors(trained, photos, tmp_path, capsys):
    measured = tmp_path / "measured"
    assert main(["degrade", str(photos), str(measured), "--kernel", "Gaussian_R1"]) == 0
    out = tmp_path / "restored"
    assert (
        main(
            [
                "reconstruct",
                str(measured),
                str(out),
                "--weights",
                str(trained),
                "--tile",
                "48",
                "--overlap",
                "8",
                "--side_by_side",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("*.png") if "side" not in p.name) == [
        "crop0.png",
        "crop1.png",
        "crop2.png",
    ]
    capsys.readouterr()
    # weights for another task, a missing input, an unknown baseline: one line, exit code 2
    assert main(["reconstruct", str(measured), str(out), "--weights", str(trained), "--task", "sr"]) == 2
    assert "deblurring" in capsys.readouterr().err
    assert (
        main(["reconstruct", str(tmp_path / "nothing.png"), str(out / "x.png"), "--weights", str(trained)])
        == 2
    )
    assert "input not found" in capsys.readouterr().err
    single = next(measured.glob("*.png"))  # a file into a folder: refused before anything is written
    assert main(["reconstruct", str(single), str(out), "--weights", str(trained)]) == 2
    assert "OUTPUT must be a file too" in capsys.readouterr().err
    assert main(["test", "--model_kind", "magic", "--dataset", str(photos)]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["test", "--weights", str(tmp_path / "missing.safetensors"), "--dataset", str(photos)]) == 2


def test_baseline_through_cli(photos, capsys):
    psnr = {}
    for kind in ("wiener", "id"):
        arguments = ["--task", "deblurring", "--kernel", "Gaussian_R1", "--model_kind", kind]
        assert main(["test", *arguments, "--dataset", str(photos), "--resize", "0", "--quiet"]) == 0
        psnr[kind] = float(capsys.readouterr().out.split("PSNR ")[1].split()[0])
    assert psnr["wiener"] > psnr["id"]

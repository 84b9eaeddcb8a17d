"""Run logging: TensorBoard events hold exactly the CSV's numbers, the validation panel, resume purges."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from conftest import tiny_config
from sei.cli import main
from sei.errors import SeiUserError
from sei.imageio import to_uint8
from sei.run_log import CSV_FILES, TENSORBOARD_DIR, parse_backends, side_by_side, validation_panel
from sei.training import TrainConfig, checkpoint_path, train
from sei.training.problem import training_data


def _config(folder, **changes) -> TrainConfig:
    return tiny_config(**{"dataset": str(folder), "val_interval": 3, "amp": "none", **changes})


def _csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _assert_events_equal_csv(run, group: str) -> list[str]:
    """Every CSV column of ``group`` is the TensorBoard tag ``group/column``, step for step, value for value
    (TensorBoard stores float32: the CSV's value rounded to float32 must equal it exactly)."""
    events = _events(run)
    rows = _csv(run / CSV_FILES[group])
    columns = [c for c in rows[0] if c != "step"]
    for column in columns:
        scalars = events.Scalars(f"{group}/{column}")
        assert [e.step for e in scalars] == [int(r["step"]) for r in rows], column
        assert [e.value for e in scalars] == [float(np.float32(float(r[column]))) for r in rows], column
    return columns


def test_tensorboard_events_equal_the_csv_and_show_the_validation_panel(photo_folder, tmp_path):
    run = tmp_path / "run"
    config = _config(photo_folder)
    train(config, run, progress=False)
    train_columns = _assert_events_equal_csv(run, "train")
    assert {"loss", "sure", "equivariance", "lr", "step_seconds", "seconds", "epoch"} <= set(train_columns)
    validation_columns = _assert_events_equal_csv(run, "validation")
    assert {"val_psnr", "val_ssim", "val_sure_gap"} <= set(validation_columns)
    assert [int(r["step"]) for r in _csv(run / "validation.csv")] == [3, 6]

    # the panel at the last validation is measurement | estimate | ground truth of the final network
    from PIL import Image

    from sei.physics import make_physics
    from sei.weights import load_weights

    images = _events(run).Images("validation/panel")
    assert [image.step for image in images] == [3, 6]
    shown = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    model, _ = load_weights(run / "weights.safetensors")
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    source, held_out = training_data(config, physics)
    expected = to_uint8(validation_panel(model, physics, held_out, source, torch.device("cpu")))
    assert shown.shape == expected.shape and shown.shape[1] == 3 * held_out[0][1].shape[-1] + 2 * 4
    assert (
        np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    )  # the estimate may differ by one rounding level
    truth = to_uint8(held_out[0][1])
    assert np.array_equal(shown[:, -truth.shape[1] :], truth)


def test_resumed_run_logs_every_step_once_in_both_backends(photo_folder, tmp_path):
    run = tmp_path / "run"
    config = _config(photo_folder, val_interval=0)
    train(config, run, progress=False)
    first = _csv(run / "metrics.csv")
    # resume from step 3 into the same folder: steps 4-6 are trained (and logged) again
    train(config, run, resume=str(checkpoint_path(run, 3)), progress=False)
    rows = _csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert [r["loss"] for r in rows] == [r["loss"] for r in first]  # exact resume: the same losses
    _assert_events_equal_csv(run, "train")  # TensorBoard purged the interrupted steps 4-6: each step once
    assert len(list((run / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2  # one file per session


def test_log_choices(photo_folder, tmp_path, capsys):
    config = _config(photo_folder, max_steps=2, val_interval=0, checkpoint_interval=2)
    train(config, tmp_path / "csv", progress=False, log="csv")
    assert (tmp_path / "csv" / "metrics.csv").is_file() and not (tmp_path / "csv" / TENSORBOARD_DIR).exists()
    train(config, tmp_path / "none", progress=False, log="none")
    assert (
        not (tmp_path / "none" / "metrics.csv").exists()
        and not (tmp_path / "none" / TENSORBOARD_DIR).exists()
    )
    assert (tmp_path / "none" / "weights.safetensors").is_file()
    assert parse_backends("tensorboard, csv") == ("csv", "tensorboard")
    with pytest.raises(SeiUserError, match="--log takes none"):
        parse_backends("wandb")
    none = [
        "train",
        "--dataset",
        str(photo_folder),
        "--resize",
        "0",
        "--patch_size",
        "24",
        "--batch_size",
        "2",
        "--max_steps",
        "1",
        "--model",
        "unet-small",
        "--val_images",
        "0",
        "--quiet",
        "--log",
        "none",
        "--out_dir",
        str(tmp_path / "cli_none"),
    ]
    assert main(none) == 0  # the CLI's parsed "none" reaches train() as no backend
    assert (
        not (tmp_path / "cli_none" / "metrics.csv").exists()
        and (tmp_path / "cli_none" / "weights.safetensors").is_file()
    )
    code = main(
        ["train", "--dataset", str(photo_folder), "--log", "csv,wandb", "--out_dir", str(tmp_path / "bad")]
    )
    assert code == 2 and "--log takes none" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_side_by_side_repeats_small_images_and_keeps_values():
    small, large = torch.rand(3, 4, 5), torch.rand(3, 8, 10)
    panel = side_by_side([small, large], gap=2)
    assert panel.shape == (3, 8, 22)
    assert torch.equal(panel[:, ::2, 0:10:2], small) and torch.equal(panel[:, :, 12:], large)
    assert torch.equal(panel[:, :, 10:12], torch.ones(3, 8, 2))

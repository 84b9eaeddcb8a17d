"""A user's own measurements: the PSF travels with the model, resumes and budgets do what the flags
say, fine-tuning starts from the given weights, the noise level can be estimated, ``sei restore``."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY, disk_psf, tiny_config
from sei.cli import main
from sei.data import MeasurementFolder
from sei.evaluation import image_metrics
from sei.imageio import read_image, write_image
from sei.physics import Blur
from sei.training import TimeBudget, TrainConfig, latest_checkpoint, learning_rate, load_checkpoint, train
from sei.weights import load_weights_with_physics, read_weights, save_weights


@pytest.fixture(scope="module")
def user_data(tmp_path_factory, astronaut):
    """A user's folder: a defocus PSF as .npy and three real 96x112 measurements blurred by it (noise 5)."""
    root = tmp_path_factory.mktemp("user")
    kernel = disk_psf(3).numpy()
    np.save(root / "psf.npy", kernel)
    physics = Blur(torch.from_numpy(kernel), noise_level=5.0)
    truths = []
    for index, (top, left) in enumerate([(40, 60), (200, 220), (300, 100)]):
        x = astronaut[:, top : top + 96, left : left + 112]
        truths.append(x)
        write_image(physics.measure(x[None], seed=index)[0], root / "measurements" / f"m{index}.png")
    return root, truths


def _train_args(root, out, *extra):
    return [
        "train",
        "--measurements",
        str(root / "measurements"),
        "--kernel",
        str(root / "psf.npy"),
        "--noise_level",
        "5",
        "--model",
        "unet-small",
        "--batch_size",
        "2",
        "--patch_size",
        "32",
        "--checkpoint_interval",
        "2",
        "--val_interval",
        "0",
        "--quiet",
        "--out_dir",
        str(out),
        *extra,
    ]


def _measured(root, **changes) -> TrainConfig:
    """A short run of the tiny network on the user's measurements and PSF."""
    return tiny_config(
        **{
            "measurements": str(root / "measurements"),
            "kernel": str(root / "psf.npy"),
            "patch_size": 32,
            **changes,
        }
    )


def _tiny_config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text("[model_options]\nchannels = 8\nlevels = 2\nblocks = 1\n")
    return path


def test_the_kernel_travels_inside_weights_and_checkpoints(user_data, tmp_path, monkeypatch, capsys):
    root, _ = user_data
    work = tmp_path / "work"
    shutil.copytree(root, work)
    run = tmp_path / "run"
    tiny = ["--config", str(_tiny_config_file(tmp_path)), "--log", "none"]
    assert main(_train_args(work, run, "--max_steps", "2", *tiny)) == 0
    measurement, weights = str(work / "measurements" / "m0.png"), str(run / "weights.safetensors")

    def reconstruct(out, *extra: str) -> int:
        return main(["reconstruct", measurement, str(out), "--weights", weights, *extra])

    reference = tmp_path / "reference.npy"
    assert reconstruct(reference) == 0
    moved = tmp_path / "elsewhere" / "same_psf.npy"
    moved.parent.mkdir()
    shutil.move(work / "psf.npy", moved)  # the file the run was trained with is gone
    monkeypatch.chdir(tmp_path / "elsewhere")
    _, _, physics = load_weights_with_physics(run / "weights.safetensors")
    assert torch.allclose(physics.kernel, disk_psf(3), rtol=0, atol=1e-15)
    assert torch.allclose(
        load_checkpoint(latest_checkpoint(run))["physics"]["tensors"]["kernel"],
        disk_psf(3),
        rtol=0,
        atol=1e-15,
    )
    assert reconstruct(tmp_path / "again.npy") == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), np.load(reference))
    # the same PSF under another path (and in float32) is the same kernel; another PSF is refused
    np.save("float32_copy.npy", disk_psf(3).numpy().astype(np.float32))
    assert reconstruct("x.npy", "--kernel", "float32_copy.npy") == 0
    capsys.readouterr()
    assert reconstruct("y.npy", "--kernel", "Gaussian_R2") == 2
    assert "another kernel" in capsys.readouterr().err
    # resuming from another folder, without the PSF file, with a longer budget
    assert main(["train", "--resume", str(run), "--max_steps", "4", "--quiet"]) == 0
    assert load_checkpoint(latest_checkpoint(run))["step"] == 4


def test_old_weights_that_only_name_their_kernel_file_ask_for_it(tmp_path, capsys):
    from sei.models import create_model

    model = create_model("unet-small", **TINY)
    path = save_weights(
        model, tmp_path / "old.safetensors", {"kernel": "psf.npy", "noise_level": 5.0}
    )  # no physics: as before
    assert "physics.kernel" not in read_weights(path)[0]
    np.save(tmp_path / "psf.npy", disk_psf(2).numpy())
    write_image(torch.rand(3, 40, 40), tmp_path / "y.png")
    assert (
        main(["reconstruct", str(tmp_path / "y.png"), str(tmp_path / "a.png"), "--weights", str(path)]) == 2
    )
    assert "pass --kernel" in capsys.readouterr().err
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "y.png"),
                str(tmp_path / "a.png"),
                "--weights",
                str(path),
                "--kernel",
                str(tmp_path / "psf.npy"),
            ]
        )
        == 0
    )
    old_named = save_weights(
        model, tmp_path / "named.safetensors", {"kernel": "Gaussian_R2", "noise_level": 5.0}
    )
    _, _, physics = load_weights_with_physics(old_named)
    assert physics.kernel.shape == (13, 13)


def test_a_resumed_run_refuses_a_flag_it_would_ignore(user_data, tmp_path, capsys):
    root, _ = user_data
    run = tmp_path / "run"
    config = str(_tiny_config_file(tmp_path))
    assert main(_train_args(root, run, "--max_steps", "2", "--config", config, "--log", "none")) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.01", "--quiet"]) == 2
    assert "--lr 0.01 differs from the resumed run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--max_steps", "1", "--quiet"]) == 2
    assert "cannot shorten" in capsys.readouterr().err
    # the same values given again are not a change
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--noise_level",
                "5",
                "--kernel",
                str(root / "psf.npy"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "already reached its 2 steps" in capsys.readouterr().err


def test_a_longer_budget_replans_the_schedule_for_the_new_total(user_data, tmp_path):
    root, _ = user_data
    base = _measured(root, max_steps=4, checkpoint_interval=2)
    train(base, tmp_path / "run", progress=False)
    before = load_checkpoint(latest_checkpoint(tmp_path / "run"))["model"]
    state = train(TrainConfig(max_steps=8), tmp_path / "run", resume="auto", progress=False)
    assert state.step == 8
    after = load_checkpoint(latest_checkpoint(tmp_path / "run"))["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(handle)}
    lr = 5e-4
    assert rows[4] == pytest.approx(learning_rate(3, 4, lr))  # the first session's schedule ended at 4 steps
    for step in range(5, 9):  # the resumed steps follow the schedule of the new total
        assert rows[step] == pytest.approx(learning_rate(step - 1, 8, lr))


def test_time_budget_plans_the_steps_that_fit_and_stops_when_spent():
    """At a steady 0.5 s a step, the plan is as many steps as fit in what is left of 100 s less the 2 %
    reserve (and less the last validation's cost, with validations every 10 steps), and not one more."""
    budget = TimeBudget(seconds=100.0, start_step=0, cap=None, started=0.0)
    total = budget.initial_total()
    clock, pace, reserve = 0.0, 0.5, 2.0
    for step in range(1, 5):  # the first call starts the clock, then 0.5 s per step
        clock += pace if step > 1 else 2.0
        total = budget.plan(step, total, val_interval=0, now=clock)
        assert total == 1 << 40  # 3 timed steps are not enough to plan
    clock += pace
    total = budget.plan(5, total, val_interval=0, now=clock)
    left = 100.0 - clock - reserve
    assert (total - 5) * pace <= left < (total - 5 + 1) * pace
    capped = TimeBudget(seconds=100.0, start_step=0, cap=50, started=0.0)
    assert capped.initial_total() == 50
    assert budget.plan(7, total, val_interval=0, now=98.5) == 7  # within the reserve: this step is the last
    with_validation = TimeBudget(seconds=100.0, start_step=0, cap=None, started=0.0)
    with_validation.plan(1, 1 << 40, 10, 0.0)
    with_validation.validated(5.0)  # each validation costs 5 s, one every 10 steps of 0.5 s
    planned = with_validation.plan(5, 1 << 40, 10, 7.0)
    per_step, left = pace + 5.0 / 10, 100.0 - 7.0 - reserve - 5.0  # the final validation is paid for too
    assert (planned - 5) * per_step <= left < (planned - 5 + 1) * per_step


def test_a_time_limited_run_ends_its_schedule_within_the_budget(user_data, tmp_path, monkeypatch):
    import sei.training.loop as loop

    ticks = iter(range(10**9))
    monkeypatch.setattr(
        loop, "clock", lambda: 0.01 * next(ticks)
    )  # a steady machine: 10 ms per clock reading
    root, _ = user_data
    config = _measured(
        root,
        method="css",  # one network pass a step: the budget is what is tested
        patch_size=16,
        max_steps=None,
        checkpoint_interval=500,
        time_limit=1.0,
    )
    state = train(config, tmp_path / "run", progress=False, log="csv")
    assert state.step > 10 and not state.out_of_time
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    # the plan fitted the budget: the last step is the last of the schedule, its learning rate decayed
    assert float(rows[-1]["lr"]) == pytest.approx(learning_rate(state.step - 1, state.step, 5e-4))
    assert float(rows[-1]["lr"]) < 0.1 * 5e-4
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["total_steps"] == state.step


def test_init_starts_from_the_given_weights_and_refuses_another_task(user_data, tmp_path, capsys):
    from sei.models import create_model

    root, _ = user_data
    start = create_model("dncnn-small", depth=3, channels=8)
    torch.nn.init.normal_(next(start.parameters()), std=0.3)
    init = save_weights(
        start, tmp_path / "start.safetensors", {"noise_level": 5.0}, physics=Blur(disk_psf(2))
    )
    config = TrainConfig(
        measurements=str(root / "measurements"),
        kernel=str(root / "psf.npy"),
        init=str(init),
        lr=1e-12,
        batch_size=2,
        patch_size=32,
        max_steps=1,
        val_interval=0,
    )
    train(config, tmp_path / "run", progress=False, log="none")
    model, metadata, _ = load_weights_with_physics(tmp_path / "run" / "weights.safetensors")
    assert metadata["model"]["name"] == "dncnn-small" and metadata["init"] == str(
        init
    )  # the architecture came from --init
    for key, value in start.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6), key
    sr = save_weights(
        create_model("unet-small", task="sr", sr_factor=2, **TINY),
        tmp_path / "x2.safetensors",
        {"noise_level": 5.0},
    )
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--task",
                "sr",
                "--sr_factor",
                "4",
                "--init",
                str(sr),
                "--max_steps",
                "1",
                "--out_dir",
                str(tmp_path / "r4"),
            ]
        )
        == 2
    )
    assert "sr_factor=2, but sr_factor=4" in capsys.readouterr().err
    assert main(["train", "--init", str(sr), "--max_steps", "1", "--out_dir", str(tmp_path / "rb")]) == 2
    assert "task=sr, but task=deblurring" in capsys.readouterr().err


def test_noise_level_auto_is_estimated_stored_and_kept_on_resume(user_data, tmp_path, capsys):
    root, _ = user_data
    config = _measured(root, noise_level="auto", max_steps=2, checkpoint_interval=1)
    state = train(config, tmp_path / "run", progress=False, log="none")
    assert "estimated noise level" in capsys.readouterr().err
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["noise_level"] == "auto" and stored["noise_estimate"] == pytest.approx(5.0, rel=0.25)
    _, metadata = read_weights(tmp_path / "run" / "weights.safetensors")
    assert (
        metadata["noise_level"] == pytest.approx(stored["noise_estimate"])
        and metadata["noise_level_estimated"] is True
    )
    assert state.noise_level == pytest.approx(stored["noise_estimate"])
    train(TrainConfig(max_steps=3), tmp_path / "run", resume="auto", progress=False, log="none")
    assert "estimated" not in capsys.readouterr().err  # a resumed run keeps its estimate
    with pytest.raises(Exception, match="--noise_level auto estimates"):
        train(
            TrainConfig(dataset=str(root / "measurements"), noise_level="auto", max_steps=1),
            tmp_path / "sim",
            progress=False,
        )


def test_nan_or_infinite_measurements_are_refused(tmp_path, capsys):
    y = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    y[3, 4, 1] = np.nan
    np.save(tmp_path / "holes.npy", y)
    assert (
        main(
            ["reconstruct", str(tmp_path / "holes.npy"), str(tmp_path / "out.npy"), "--model_kind", "wiener"]
        )
        == 2
    )
    assert "NaN or infinite" in capsys.readouterr().err
    with pytest.raises(Exception, match="NaN or infinite"):
        MeasurementFolder(tmp_path)


def test_restore_errors_are_one_line_and_exit_2(user_data, tmp_path, capsys):
    root, _ = user_data
    measurements = str(root / "measurements")
    cases = [
        (["restore", measurements, str(tmp_path / "a")], "needs its PSF"),
        (
            [
                "restore",
                measurements,
                str(tmp_path / "b"),
                "--kernel",
                str(root / "psf.npy"),
                "--time_limit",
                "0",
            ],
            "must be positive",
        ),
        (
            [
                "restore",
                measurements,
                str(tmp_path / "c"),
                "--kernel",
                str(root / "psf.npy"),
                "--time_limit",
                "soon",
            ],
            "cannot read the time limit",
        ),
        (
            [
                "restore",
                measurements,
                str(tmp_path / "d"),
                "--kernel",
                str(root / "psf.npy"),
                "--time_limit",
                "2s",
            ],
            "leaves",
        ),
        (
            [
                "restore",
                measurements,
                str(tmp_path / "e"),
                "--kernel",
                str(root / "psf.npy"),
                "--noise_level",
                "loud",
            ],
            "noise_level",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


@pytest.mark.slow
def test_restore_improves_the_users_measurements_within_its_budget(user_data, tmp_path, capsys):
    root, truths = user_data
    out = tmp_path / "restored"
    assert (
        main(
            [
                "restore",
                str(root / "measurements"),
                str(out),
                "--kernel",
                str(root / "psf.npy"),
                "--time_limit",
                "40s",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_seconds"] <= 40 and summary["noise_level"] == pytest.approx(5.0, rel=0.25)
    assert summary["init"] == "sei-gaussian_r2-noise5" and summary["steps"] > 0
    gains = []
    for index, x in enumerate(truths):
        y = read_image(root / "measurements" / f"m{index}.png")
        restored = read_image(out / f"m{index}.png")
        gains.append(image_metrics(restored, x)[0] - image_metrics(y, x)[0])
    assert min(gains) > 1.0, gains  # every image is sharper than its measurement
    assert (out / "side_by_side" / "m0.png").is_file()
    capsys.readouterr()
    assert main(["restore", str(root / "measurements"), str(out), "--kernel", str(root / "psf.npy")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_unsure_learns_the_level_from_a_wrong_guess_and_resumes_exactly(user_data, tmp_path, capsys):
    """``--unsure`` told half the true level (2.5 for 5): the learned level rises from the guess (it
    is logged per step and stored in the weights), and a run resumed half-way learns the same level,
    to the bit, as an uninterrupted one (the level lives in the checkpoint's objective state)."""
    root, _ = user_data
    config = _tiny_config_file(tmp_path)
    args = ["--noise_level", "2.5", "--unsure", "--config", str(config), "--lr", "0.002"]
    assert main(_train_args(root, tmp_path / "whole", "--max_steps", "20", *args)) == 0
    assert "noise level learned by UNSURE" in capsys.readouterr().out
    with open(tmp_path / "whole" / "metrics.csv") as handle:
        levels = [float(row["noise_level"]) for row in csv.DictReader(handle)]
    assert levels[-1] > levels[0] > 2.5, levels
    _, metadata = read_weights(tmp_path / "whole" / "weights.safetensors")
    assert metadata["noise_level_learned"] == pytest.approx(levels[-1], abs=1e-3)
    assert main(_train_args(root, tmp_path / "half", "--max_steps", "10", *args)) == 0
    assert main(["train", "--resume", str(tmp_path / "half"), "--max_steps", "20", "--quiet"]) == 0
    _, resumed = read_weights(tmp_path / "half" / "weights.safetensors")
    assert resumed["noise_level_learned"] == metadata["noise_level_learned"]
    capsys.readouterr()
    assert main(_train_args(root, tmp_path / "sup", "--max_steps", "1", "--method", "css", "--unsure")) == 2
    assert "no SURE term" in capsys.readouterr().err

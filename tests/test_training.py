"""The training loop: exact resume, atomic checkpoints, data order, every method x task, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import tiny_config, wrapped_training_objective
from sei.cli import main
from sei.errors import SeiUserError
from sei.training import StepBatches, TrainConfig, latest_checkpoint, learning_rate, load_checkpoint, train


def _config(folder, **changes) -> TrainConfig:
    return tiny_config(dataset=str(folder), **changes)


def _weights(run):
    return load_checkpoint(latest_checkpoint(run))["model"]


def test_resume_equals_uninterrupted(photo_folder, tmp_path, monkeypatch):
    config = _config(photo_folder)
    train(config, tmp_path / "whole", progress=False, log="none")

    from sei.training.writer import RunWriter

    original = RunWriter.checkpoint

    def stop_after_first(self, step, *args):
        original(self, step, *args)
        if step == 3:
            raise KeyboardInterrupt  # the process dies right after a checkpoint

    monkeypatch.setattr(RunWriter, "checkpoint", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "split", progress=False)
    monkeypatch.setattr(RunWriter, "checkpoint", original)
    state = train(config, tmp_path / "split", resume="auto", progress=False)
    assert state.step == 6
    whole, split = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    for key in whole:
        assert torch.equal(whole[key], split[key]), key
    # the metrics log has each step once
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_kill_during_checkpoint_write_keeps_last_complete_checkpoint(photo_folder, tmp_path, monkeypatch):
    config = _config(photo_folder)
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        if obj.get("step") == 6:
            handle.write(b"half a checkpoint")
            raise SystemExit("killed mid-write")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(SystemExit):
        train(config, tmp_path / "run", progress=False, log="none")
    monkeypatch.setattr(torch, "save", real_save)
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["step_00000003.pt"]  # no partial file left behind, the last complete one intact
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["step"] == 3
    assert train(config, tmp_path / "run", resume="auto", progress=False, log="none").step == 6


def test_step_batches_split_the_same_global_stream():
    single = StepBatches(10, 8, seed=0, start_step=0, total_steps=5)
    halves = [StepBatches(10, 8, seed=0, start_step=0, total_steps=5, rank=r, world_size=2) for r in (0, 1)]
    for step in range(5):
        assert single.keys(step) == halves[0].keys(step) + halves[1].keys(step)
    # every image appears once per epoch, and epochs are reshuffled
    stream = [key for step in range(5) for key in single.keys(step)]
    assert sorted(i for e, i in stream if e == 0) == list(range(10))
    assert [i for e, i in stream if e == 0] != [i for e, i in stream if e == 1]
    # resuming mid-run (even on another process count) continues the same stream
    assert list(StepBatches(10, 8, 0, 3, 5)) == [single.keys(3), single.keys(4)]


def test_learning_rate_schedule():
    values = [learning_rate(step, 10, 1e-3) for step in range(11)]
    assert values[:5] == [1e-3] * 5 and values[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


class _FirstStep:
    """The training objective, keeping the first step's batch, random draws and loss (at the initial
    weights) so that the loss of that same step can be evaluated again at any later weights."""

    def __init__(self, objective) -> None:
        self.objective, self.first = objective, None

    def __getattr__(self, name: str):
        return getattr(self.objective, name)

    def __call__(self, model, y, physics, x=None, rng=None):
        if self.first is not None:
            return self.objective(model, y, physics, x=x, rng=rng)
        self.first = {"call": (model, y, physics, x), "rng": rng.get_state(), "global": torch.get_rng_state()}
        terms = self.objective(model, y, physics, x=x, rng=rng)
        self.first["loss"] = float(terms["loss"].detach())
        return terms

    def first_loss_now(self) -> float:
        model, y, physics, x = self.first["call"]
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.first["global"])
            rng = torch.Generator().set_state(self.first["rng"])
            return float(self.objective(model, y, physics, x=x, rng=rng)["loss"].detach())


@pytest.mark.parametrize("method", ["proposed", "sup", "css", "ei-shift", "ei-rotate", "sure"])
@pytest.mark.parametrize("task", ["deblurring", "sr"])
def test_every_method_and_task_steps_down_its_objective(photo_folder, tmp_path, method, task):
    """The loop's step lowers the method's loss on the batch and draws it was taken on: Adam's first
    step moves every parameter by the learning rate against its gradient's sign, so at a small rate the
    loss must fall (measured 0.2 % to 14 %). A loop that trained another objective, stepped the wrong
    way or not at all fails it. (That the methods learn is in test_losses.py, over 40 steps.)"""
    config = _config(photo_folder, method=method, task=task, max_steps=1, patch_size=16, lr=1e-4, amp="none")
    with wrapped_training_objective(_FirstStep) as built:
        state = train(config, tmp_path / "run", progress=False, log="none")
    assert state.step == 1 and built[0].first["loss"] == state.last_terms["loss"]
    assert built[0].first_loss_now() < built[0].first["loss"]


def test_refuses_to_mix_runs_and_unknown_config(photo_folder, tmp_path):
    config = _config(photo_folder, max_steps=1)
    train(config, tmp_path / "run", progress=False, log="none")
    with pytest.raises(SeiUserError, match="already holds a run"):
        train(config, tmp_path / "run", progress=False, log="none")
    assert train(config, tmp_path / "run", overwrite=True, progress=False, log="none").step == 1
    with pytest.raises(SeiUserError, match="unknown configuration key"):
        TrainConfig.from_dict({"learning_rate": 1})


def test_cli_errors_exit_2(photo_folder, tmp_path, capsys):
    common = ["--dataset", str(photo_folder), "--out_dir", str(tmp_path / "o"), "--quiet"]
    assert main(["train", "--method", "magic", *common]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["train", "--kernel", "Blob_R1", *common]) == 2
    assert "unknown kernel" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--dataset",
                "div2k",
                "--data_root",
                str(tmp_path / "empty"),
                "--out_dir",
                str(tmp_path / "o2"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "sei data download div2k" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda:0", "--max_steps", "1", *common]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "o" / "weights.safetensors").exists()


def test_cli_train_config_file_and_flags(photo_folder, tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        'method = "css"\nmax_steps = 2\nbatch_size = 2\npatch_size = 16\nmodel = "unet-small"\nresize = '
        "0\n[model_options]\nchannels = 8\nlevels = 2\n"
    )
    out = tmp_path / "o"
    assert (
        main(
            [
                "train",
                "--config",
                str(config_file),
                "--max_steps",
                "1",
                "--dataset",
                str(photo_folder),
                "--out_dir",
                str(out),
                "--quiet",
                "--val_interval",
                "0",
            ]
        )
        == 0
    )
    import json

    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "css" and saved["max_steps"] == 1 and saved["model_options"]["channels"] == 8


def test_train_on_measurements_only(photo_folder, tmp_path, capsys):
    """SEI from a folder of degraded images alone: no ground truth anywhere, validation by SURE."""
    measurements = tmp_path / "measured"
    assert (
        main(["degrade", str(photo_folder), str(measurements), "--kernel", "Gaussian_R1", "--format", "npy"])
        == 0
    )
    out = tmp_path / "run"
    flags = [
        "--measurements",
        str(measurements),
        "--kernel",
        "Gaussian_R1",
        "--noise_level",
        "5",
        "--patch_size",
        "24",
        "--batch_size",
        "2",
        "--max_steps",
        "4",
        "--val_interval",
        "2",
        "--model",
        "unet-small",
        "--out_dir",
        str(out),
        "--quiet",
    ]
    assert main(["train", "--method", "proposed", *flags]) == 0
    validation = (out / "validation.csv").read_text().splitlines()
    assert validation[0].startswith("step,val_sure") and len(validation) == 3
    import json

    from sei.weights import read_weights

    _, metadata = read_weights(out / "weights.safetensors")
    assert metadata["dataset"] == str(measurements) and metadata["kernel"] == "Gaussian_R1"
    assert json.loads((out / "config.json").read_text())["measurements"] == str(measurements)
    capsys.readouterr()
    assert main(["train", "--method", "sup", *flags, "--overwrite"]) == 2  # supervised needs ground truth
    assert "ground truth" in capsys.readouterr().err


class _MemorisingCheat(torch.nn.Module):
    """A Wiener filter that recognises its training measurements and answers anything else (such as
    y + tau b) with an added Laplacian: what the finite-difference SURE rewards (see SureLoss)."""

    def __init__(self, physics, known: list[torch.Tensor], cheat: bool) -> None:
        super().__init__()
        self.physics, self.known, self.cheat = physics, known, cheat
        self.laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).expand(3, 1, 3, 3)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._one(sample[None]) for sample in y])

    def _one(self, y: torch.Tensor) -> torch.Tensor:
        wiener = self.physics.prox_l2(0, y, 30.0, img_size=tuple(y.shape[-2:]))
        if not self.cheat or any(torch.equal(y.detach(), k) for k in self.known):
            return wiener
        padded = torch.nn.functional.pad(y, (1, 1, 1, 1), mode="circular")
        return wiener + torch.nn.functional.conv2d(padded, self.laplacian, groups=3)


def test_validation_flags_a_network_that_games_the_finite_difference():
    from sei.data import MeasuredImages, load_images
    from sei.losses import build_method
    from sei.physics import make_physics
    from sei.training import GAMING_GAP, validate

    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    training = MeasuredImages(
        [(name, image[:, :64, :64]) for name, image in list(load_images("samples", split="train"))[:2]],
        physics,
        seed=0,
    )
    known = [training[i][2][None] for i in range(len(training))]
    objective = build_method("proposed", physics, sure_divergence="finite-difference")
    gaps = {
        cheat: validate(
            _MemorisingCheat(physics, known, cheat), physics, None, training, objective, torch.device("cpu")
        )
        for cheat in (False, True)
    }
    assert abs(gaps[False]["val_sure_gap"]) < 0.1  # honest: the two estimators agree
    assert gaps[True]["val_sure_gap"] < GAMING_GAP < 0
    assert gaps[True]["val_sure"] == pytest.approx(gaps[False]["val_sure"])  # the exact SURE is not fooled
    exact = build_method("proposed", physics, sure_divergence="exact")  # nothing to compare
    assert "val_sure_gap" not in validate(
        _MemorisingCheat(physics, known, True), physics, None, training, exact, torch.device("cpu")
    )


def test_stop_on_gaming_keeps_the_weights_of_the_last_honest_validation(photo_folder, tmp_path, monkeypatch):
    """Validations at steps 2, 4, 6: the gap opens at 6, so the run ends there with step 4's weights
    (the checkpoint written at step 4 of the same trajectory)."""
    import sei.training.validation as validation
    from sei.training.writer import RunWriter
    from sei.weights import load_weights

    real_validate = validation.validate

    def scripted(model, physics, held_out, source, objective, device):
        record = real_validate(model, physics, held_out, source, objective, device)
        record["val_sure_gap"] = -3.0 if training_steps[0] >= 6 else 0.0
        return record

    training_steps = [0]
    original_log = RunWriter.log

    def count(self, step, *args):
        training_steps[0] = step
        original_log(self, step, *args)

    monkeypatch.setattr(validation, "validate", scripted)
    monkeypatch.setattr(RunWriter, "log", count)
    config = _config(
        photo_folder,
        method="proposed",
        max_steps=8,
        val_interval=2,
        checkpoint_interval=2,
        stop_on_gaming=True,
    )
    state = train(config, tmp_path / "run", progress=False, log="none")
    assert state.stopped_early and state.step == 4
    model, metadata = load_weights(tmp_path / "run" / "weights.safetensors")
    assert metadata["steps"] == 4
    at_four = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000004.pt")["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, at_four[key]), key
    assert not (
        tmp_path / "run" / "checkpoints" / "step_00000006.pt"
    ).exists()  # nothing gamed is kept as a checkpoint
    with pytest.raises(SeiUserError, match="val_interval"):
        train(dataclasses.replace(config, val_interval=0), tmp_path / "other", progress=False)


def test_sei_train_resolves_its_configuration_once_before_touching_the_run(
    photo_folder, tmp_path, monkeypatch
):
    """The CLI resolves the configuration (presets, checks, resume) once; the loop consumes it. A bad
    combination fails at that boundary, before --overwrite deletes the previous run's checkpoints."""
    from sei.training import config as config_module

    calls = []
    real = config_module.resolve_config

    def counting(config):
        calls.append(config)
        return real(config)

    monkeypatch.setattr(config_module, "resolve_config", counting)
    out = tmp_path / "run"
    flags = ["--dataset", str(photo_folder), "--resize", "0", "--patch_size", "16", "--batch_size", "2"]
    flags += ["--model", "unet-small", "--val_images", "0", "--log", "none", "--out_dir", str(out), "--quiet"]
    assert main(["train", *flags, "--max_steps", "2", "--checkpoint_interval", "2"]) == 0
    assert len(calls) == 1
    assert main(["train", *flags, "--resume", "--max_steps", "3"]) == 0
    assert len(calls) == 2 and load_checkpoint(latest_checkpoint(out))["step"] == 3
    kept = sorted((out / "checkpoints").glob("step_*.pt"))
    assert main(["train", *flags, "--overwrite", "--method", "ei"]) == 2  # an unknown method
    assert sorted((out / "checkpoints").glob("step_*.pt")) == kept

"""benchmarks/gpu_check.py: its CPU mode runs end to end and reports what it should (so the GPU script
does not rot between GPU runs), its checks can fail, and benchmarks/gpu_wheels.sh skips what a target has."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("gpu_check", gpu_check)  # its dataclasses look their module up
_spec.loader.exec_module(gpu_check)


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # about a minute: five sections, two torchrun launches
def test_cpu_mode_runs_every_section(cpu_report):
    assert cpu_report["mode"] == "cpu"
    assert set(cpu_report["sections"]) == set(gpu_check.SECTIONS)
    assert {name: section["status"] for name, section in cpu_report["sections"].items()} == dict.fromkeys(
        gpu_check.SECTIONS, "ok"
    )
    tests = cpu_report["sections"]["tests"]
    # the suite's CUDA tests were found and, with no GPU here, skipped (not failed, not silently absent)
    assert tests["tests"].get("tests.test_physics::test_cuda_matches_cpu") == "skipped"
    assert tests["failed"] == 0 and tests["skipped"] >= 1


@pytest.mark.slow
def test_cpu_mode_training_numbers(cpu_report):
    training = cpu_report["sections"]["training"]
    sizes = cpu_report["sizes"]
    assert set(training["runs"]) == {"proposed/none", "proposed/bf16", "sup/none", "sup/bf16"}
    for run in training["runs"].values():
        assert run["steps_per_second"] > 0
        assert run["peak_memory_mib"] is None  # GPU memory only
        assert len(run["curve"]) == sizes["steps"]
        assert all(math.isfinite(v) for row in run["curve"] for v in row.values())
    assert set(training["runs"]["proposed/none"]["curve"][0]) == {"sure", "equivariance", "loss"}
    # same initialisation, batches and draws: the first step differs by precision only
    first = training["bf16_against_float32"]["proposed"]["loss"]
    assert first["mean_relative"] < 0.05
    speedups, differences = training["bf16_speedup"], training["bf16_against_float32"]
    expected = (
        "bf16"
        if (
            all(s >= gpu_check.BF16_MIN_SPEEDUP for s in speedups.values())
            and all(
                d["loss"]["mean_relative"] <= gpu_check.BF16_MAX_CURVE_DIFFERENCE
                for d in differences.values()
            )
        )
        else "float32"
    )
    assert training["recommendation"]["amp_auto"] == expected


@pytest.mark.slow
def test_cpu_mode_resume_continues_from_the_checkpoint(cpu_report):
    distributed = cpu_report["sections"]["distributed"]
    k = cpu_report["sizes"]["ddp_steps"]
    assert distributed["backend"] == "gloo"
    assert distributed["two_processes_one_device"] == "ok"  # gloo takes two processes on one CPU
    resume = distributed["resume"]
    assert resume["resumed_from_step"] == k
    assert resume["first_new_step"] == k + 1
    assert resume["final_step"] == 2 * k
    assert resume["steps_logged"] == list(range(1, 2 * k + 1))
    assert all(launch["rc"] == 0 for launch in distributed["launches"].values())


@pytest.mark.slow
def test_cpu_mode_reconstruct_and_agreement(cpu_report):
    reconstruct = cpu_report["sections"]["reconstruct"]
    for run in reconstruct["runs"].values():
        assert (
            run["rc"] == 0
            and run["command_megapixels_per_second"] > 0
            and run["inference_megapixels_per_second"] > 0
        )
    assert reconstruct["tiled_against_whole"]["psnr_db"] > 50  # tiles blend into the whole-image result
    passes = cpu_report["sections"]["agreement"]["passes"]
    assert set(passes) == {"strict"}
    entries = passes["strict"]
    assert {
        "physics/blur A",
        "physics/blur A_adjoint",
        "physics/sr_x2 A",
        "physics/sr_x2 A_adjoint",
        "network/unet-small forward",
        "network/swinir-tiny forward",
        "sure/SURE value",
        "loss/equivariance value",
    } <= set(entries)
    for name, entry in entries.items():
        assert entry["relative"] <= entry["tolerance"], name
        assert entry["max_abs"] > 0, (
            name
        )  # float32 against float64: a real comparison, not the same computation twice


def test_relative_difference():
    reference = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    result = gpu_check.relative_difference(
        reference, reference + torch.tensor([0.0, 0.004, 0.0], dtype=torch.float64)
    )
    assert result["max_abs"] == pytest.approx(0.004) and result["relative"] == pytest.approx(0.001)
    assert gpu_check.relative_difference(reference, reference, scale=2.0)["relative"] == 0
    with pytest.raises(ValueError, match="shapes differ"):
        gpu_check.relative_difference(reference, reference[:2])


def test_curve_difference():
    curve = [{"loss": v} for v in (1.0, 0.5, 0.25, 0.2, 0.1)]
    assert gpu_check._curve_difference(curve, curve, 3)["loss"]["max_relative"] == 0
    scaled = gpu_check._curve_difference(curve, [{"loss": 1.1 * row["loss"]} for row in curve], 3)["loss"]
    assert scaled["max_relative"] == pytest.approx(0.1 / (1.75 / 3))  # |difference| over the mean |reference|


def test_agreement_fails_when_a_tolerance_is_missed(tmp_path, monkeypatch):
    """The check is not a formality: float32 against float64 differs, so zero tolerances fail it."""
    assert gpu_check.section_agreement(gpu_check.CPU_SIZES, tmp_path)["status"] == "ok"
    monkeypatch.setitem(gpu_check.TOLERANCES, "strict", dict.fromkeys(gpu_check.TOLERANCES["strict"], 0.0))
    record = gpu_check.section_agreement(gpu_check.CPU_SIZES, tmp_path)
    assert record["status"] == "failed"
    assert not any(entry["within"] for entry in record["passes"]["strict"].values())


@pytest.mark.cuda
def test_cpu_and_cuda_agree(tmp_path):
    """CPU against CUDA float32: operators, SURE and equivariance values, networks (the paper's SwinIR)."""
    record = gpu_check.section_agreement(gpu_check.CUDA_SIZES, tmp_path)
    assert record["status"] == "ok", {k: v for k, v in record["passes"]["strict"].items() if not v["within"]}


def test_gpu_wheels_skip_what_the_target_has(tmp_path):
    """With a target that holds every pin of requirements.lock, nothing is downloaded (no network used);
    the torch stack and the development tools are never downloaded, even when the target lacks them."""
    lock = (ROOT / "requirements.lock").read_text().split()
    never = ("torch==", "torchvision==", "triton==", "nvidia-", "cuda-", "ruff==", "selenium==")
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("\n".join(line for line in lock if not line.lower().startswith(never)) + "\n")
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_wheels.sh"),
            "--have",
            str(freeze),
            "--dest",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to download" in done.stdout
    assert not (tmp_path / "w").exists()

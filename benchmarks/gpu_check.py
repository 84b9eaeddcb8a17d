"""The GPU path, measured: one command, one JSON file (docs/performance.md, "GPU").

    python benchmarks/gpu_check.py [--out FILE] [--steps 200]   # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --cpu [--out FILE]            # tiny sizes on the CPU (the tests run this)

Five sections, each in its own try/except (a failure is recorded in the JSON and the others still run;
the file is rewritten after each section, so a run stopped half-way keeps what it measured):

1. ``tests``: the suite's CUDA tests (``@pytest.mark.cuda``, skipped without a GPU), run by pytest.
2. ``training``: the paper preset's SwinIR, batch 8 of 48x48 Gaussian_R2 patches, SEI (``proposed``) and
   supervised, N steps each in float32 and under bf16 autocast: steps per second, peak GPU memory, and
   whether the two precisions' loss curves agree over the first steps; from these, a recommendation for
   what ``--amp auto`` should mean on CUDA (today float32, "until measured").
3. ``distributed``: ``sei train`` under torchrun: one process trains a few steps and checkpoints, then
   two processes sharing the one device resume it (NCCL on a GPU; gloo on the CPU). Where NCCL refuses
   two ranks on one GPU, that is recorded (with a bare NCCL all-reduce probe) and one process resumes.
4. ``reconstruct``: ``sei reconstruct`` of a 12-megapixel image (a bundled photograph, upsampled and
   blurred), tiled and whole: megapixels per second, peak GPU memory, tiled against whole.
5. ``agreement``: CPU against CUDA on the same inputs (the blur and bicubic operators' A and A^T, one
   SURE and one equivariance loss value with fixed draws, network forwards), within float tolerances;
   on CUDA once with TF32 off (strict float32) and once with torch's defaults.

``--cpu`` runs the same code with a tiny SwinIR, a few steps and a small image, and compares CPU
float64 against CPU float32 where the GPU run compares CPU against CUDA.

Nothing is downloaded: the images are the photographs that sei's ``samples`` take from installed
packages, the weights are the shipped ``sei-gaussian_r2-noise5``. On a GPU machine with torch but
without sei's other dependencies, bring them as wheels (``bash benchmarks/gpu_wheels.sh`` here), then:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sei_site gpu_wheels/*.whl \\
      && export PYTHONPATH=/tmp/sei_site:$PWD/src && python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTIONS = ("tests", "training", "distributed", "reconstruct", "agreement")
WORKER_FLAG = "--worker"  # internal: a torchrun worker of section 3 (see worker())
TASK, KERNEL, NOISE_LEVEL = "deblurring", "Gaussian_R2", 5.0
WEIGHTS = "sei-gaussian_r2-noise5"  # shipped with sei: section 4 needs no download

# Tolerances of section 5, as the largest difference allowed relative to the largest magnitude of the
# reference (SURE: in units of sigma^2, its natural scale; the value itself can be near 0). "strict":
# float32 against float64 on the CPU, or CPU against CUDA float32 with TF32 off; "defaults": CUDA with
# torch's default TF32 settings (convolutions in TF32, 10-bit mantissa), recorded, not required.
TOLERANCES = {
    "strict": {"physics": 1e-5, "network": 1e-4, "loss": 1e-4, "sure": 1e-3},
    "defaults": {"physics": 1e-5, "network": 2e-2, "loss": 2e-2, "sure": 0.1},
}
# Section 2's rule for --amp auto on CUDA: bf16 when it is this much faster for both methods and its
# loss curves stay this close to float32's over the first steps (mean relative difference).
BF16_MIN_SPEEDUP = 1.2
BF16_MAX_CURVE_DIFFERENCE = 0.05


@dataclass(frozen=True)
class Sizes:
    """What each mode runs: the paper's configuration on CUDA, a tiny one on the CPU."""

    device: str
    model: str  # sections 2 and 3: the network (the paper preset's on CUDA)
    model_options: dict[str, Any]
    batch: int
    patch: int
    steps: int  # section 2: steps of each (method, precision) run
    warmup: int  # steps left out of the timing (cuDNN autotuning, allocator)
    compare_steps: int  # section 2: the first steps whose losses are compared across precisions
    photos: int  # training photographs written for sections 2 and 3
    resize: int  # their short side
    ddp_steps: int  # section 3: steps of each launch
    megapixels: float  # section 4: output size
    tile: int
    agreement_model: str  # section 5: the network compared (besides unet-small)
    agreement_dtypes: tuple[str, str]  # (reference, compared) dtypes
    timeout: int  # seconds allowed to each subprocess
    extra_train_args: tuple[str, ...] = field(default_factory=tuple)


CUDA_SIZES = Sizes(
    device="cuda",
    model="swinir",
    model_options={},
    batch=8,
    patch=48,
    steps=200,
    warmup=20,
    compare_steps=20,
    photos=8,
    resize=256,
    ddp_steps=4,
    megapixels=12.0,
    tile=256,
    agreement_model="swinir",
    agreement_dtypes=("float32", "float32"),
    timeout=180,
    extra_train_args=("--num_workers", "2"),  # DataLoader workers and pinned memory, as on a real run
)
CPU_SIZES = Sizes(
    device="cpu",
    model="swinir-tiny",
    model_options={"drop_path_rate": 0.1},
    batch=2,
    patch=16,
    steps=4,
    warmup=1,
    compare_steps=3,
    photos=2,
    resize=48,
    ddp_steps=2,
    megapixels=0.1,
    tile=96,
    agreement_model="swinir-tiny",
    agreement_dtypes=("float64", "float32"),
    timeout=240,
    extra_train_args=("--model", "swinir-tiny"),
)


# ---------------------------------------------------------------------------------------------
# helpers


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: Any) -> float | None:
    """Peak GPU memory allocated by tensors since the last reset (None on the CPU)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _environment() -> dict[str, str]:
    """The environment of subprocesses: this checkout's sei first on the path, output unbuffered."""
    import sei

    env = dict(os.environ)
    source = str(Path(sei.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(command: list[str], timeout: int, cwd: Path = ROOT) -> dict[str, Any]:
    """Run a command in its own process group (killed whole on timeout); rc, seconds and the output's tail."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        rc = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        rc = None
    return {
        "rc": rc,
        "timed_out": rc is None,
        "seconds": round(time.perf_counter() - started, 2),
        "output_tail": output[-2500:],
    }


def relative_difference(reference: Any, compared: Any, scale: float | None = None) -> dict[str, float]:
    """Largest absolute difference, and the same relative to ``scale`` (default: the largest |reference|)."""
    import torch

    reference = torch.as_tensor(reference).detach().double().cpu()
    compared = torch.as_tensor(compared).detach().double().cpu()
    if reference.shape != compared.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} and {tuple(compared.shape)}")
    largest = float((reference - compared).abs().max())
    if scale is None:
        scale = float(reference.abs().max())
    return {
        "max_abs": largest,
        "relative": largest / scale if scale > 0 else (0.0 if largest == 0 else math.inf),
    }


def _photos(count: int) -> list[tuple[str, Any]]:
    """The first ``count`` training photographs of sei's ``samples`` (installed packages, no download)."""
    from sei.data.samples import load_samples

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sample whose package is missing is skipped
        images = load_samples("train")
    if len(images) < count:
        raise RuntimeError(f"only {len(images)} sample photographs could be loaded, {count} needed")
    return images[:count]


def _photo_folder(sizes: Sizes, work: Path) -> Path:
    """The training photographs, resized, as PNG files (sections 2 and 3 read the same ones)."""
    from sei.imageio import resize_short_side, write_image

    folder = work / "photos"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for identity, image in _photos(sizes.photos):
            write_image(resize_short_side(image, sizes.resize), folder / f"{identity.split('/')[-1]}.png")
    return folder


def _astronaut() -> Any:
    """scikit-image's astronaut as sei's samples load it, (3, 512, 512) in [0, 1]."""
    from sei.data.samples import SAMPLES
    from sei.imageio import array_to_tensor

    sample = next(s for s in SAMPLES if s.name == "astronaut")
    return array_to_tensor(sample.load())


# ---------------------------------------------------------------------------------------------
# 1. the suite's CUDA tests


def section_tests(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Run every test marked ``cuda`` (tests/conftest.py skips them where there is no GPU)."""
    junit = work / "junit.xml"
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.cuda" in p.read_text()
    )
    if not files:
        return {"status": "failed", "error": "no test is marked cuda under tests/"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *files,
    ]
    outcome = _run(command, sizes.timeout)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    names: dict[str, str] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kind = (
                "failed"
                if case.find("failure") is not None or case.find("error") is not None
                else ("skipped" if case.find("skipped") is not None else "passed")
            )
            counts[kind] += 1
            names[f"{case.get('classname')}::{case.get('name')}"] = kind
    ran = sum(counts.values())
    status = "ok" if outcome["rc"] == 0 and counts["failed"] == 0 and ran > 0 else "failed"
    return {
        "status": status,
        "command": " ".join(command[1:]),
        **counts,
        "tests": names,
        "rc": outcome["rc"],
        "seconds": outcome["seconds"],
        **({"output_tail": outcome["output_tail"]} if status != "ok" else {}),
    }


# ---------------------------------------------------------------------------------------------
# 2. the paper preset: float32 against bf16, SEI and supervised


def _patch_pool(sizes: Sizes, physics: Any, device: Any, batches: int = 16) -> list[dict[str, Any]]:
    """A fixed pool of training batches on the device (data loading is section 3's business)."""
    import torch

    from sei.data import MeasuredImages, PatchDataset
    from sei.imageio import resize_short_side

    images = [(identity, resize_short_side(image, sizes.resize)) for identity, image in _photos(sizes.photos)]
    patches = PatchDataset(
        MeasuredImages(images, physics, seed=0), patch_size=sizes.patch, seed=0
    )  # measured on the CPU
    pool = []
    for index in range(batches):
        patches.set_epoch(index)
        items = [patches[(index * sizes.batch + i) % len(patches)] for i in range(sizes.batch)]
        pool.append({key: torch.stack([item[key] for item in items]).to(device) for key in ("x", "y")})
    return pool


def _train_run(
    sizes: Sizes, method: str, amp: str, physics: Any, pool: list[dict[str, Any]]
) -> dict[str, Any]:
    """``steps`` optimizer steps the way ``sei.training.train`` takes them (per-step seeds, the paper's
    learning rate and schedule, losses read back every step); timed after the warm-up."""
    import torch

    from sei.losses import build_method
    from sei.models import create_model
    from sei.runtime import AMP_DTYPES, derive_seed
    from sei.training.budget import learning_rate
    from sei.training.config import PRESETS

    device = torch.device(sizes.device)
    _reset_peak(device)
    torch.manual_seed(derive_seed(0, "init"))
    model = create_model(sizes.model, task=TASK, **sizes.model_options).to(device)
    objective = build_method(method, physics, autocast_dtype=AMP_DTYPES[amp]).to(device)
    base_lr = PRESETS["paper"]["lr"][TASK]
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr, betas=(0.9, 0.999))
    rng = torch.Generator(device=device)
    curve: list[dict[str, float]] = []
    started = timed_from = time.perf_counter()
    for step in range(sizes.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, sizes.steps, base_lr)
        seed = derive_seed(0, "step", step, 0)
        torch.manual_seed(seed)
        rng.manual_seed(seed)
        batch = pool[step % len(pool)]
        model.train()
        terms = objective(model, batch["y"], physics, x=batch["x"], rng=rng)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        values = torch.stack(
            [value.detach().float() for value in terms.values()]
        ).tolist()  # a sync, as the loop's logging
        curve.append(dict(zip(terms, values, strict=True)))
        if not all(math.isfinite(v) for v in values):
            raise RuntimeError(f"{method} {amp}: non-finite loss at step {step + 1}: {curve[-1]}")
        if step + 1 == sizes.warmup:
            _sync(device)
            timed_from = time.perf_counter()
    _sync(device)
    ended = time.perf_counter()
    record = {
        "method": method,
        "amp": amp,
        "steps": sizes.steps,
        "seconds": round(ended - started, 2),
        "steps_per_second": round((sizes.steps - sizes.warmup) / (ended - timed_from), 3),
        "peak_memory_mib": _peak_mib(device),
        "curve": curve,
    }
    del model, optimizer, objective
    return record


def _curve_difference(
    reference: list[dict[str, float]], compared: list[dict[str, float]], steps: int
) -> dict[str, dict[str, float]]:
    """Per loss term, over the first ``steps`` steps: |compared - reference| relative to the mean
    |reference|."""
    out = {}
    for term in reference[0]:
        first = [row[term] for row in reference[:steps]]
        scale = sum(abs(v) for v in first) / len(first)
        differences = [
            abs(b[term] - a[term]) / scale if scale > 0 else 0.0
            for a, b in zip(reference[:steps], compared[:steps], strict=True)
        ]
        tail = max(1, len(reference) // 5)  # the last fifth of the run: where each precision ended up
        end_reference = sum(row[term] for row in reference[-tail:]) / tail
        end_compared = sum(row[term] for row in compared[-tail:]) / tail
        out[term] = {
            "mean_relative": sum(differences) / len(differences),
            "max_relative": max(differences),
            "last_fifth_mean_reference": end_reference,
            "last_fifth_mean_compared": end_compared,
        }
    return out


def section_training(sizes: Sizes, work: Path) -> dict[str, Any]:
    import torch

    from sei.models import create_model
    from sei.physics import make_physics

    device = torch.device(sizes.device)
    physics = make_physics(TASK, kernel=KERNEL, noise_level=NOISE_LEVEL).to(device)
    pool = _patch_pool(sizes, physics, device)
    parameters = sum(
        p.numel() for p in create_model(sizes.model, task=TASK, **sizes.model_options).parameters()
    )
    runs: dict[str, dict[str, Any]] = {}
    for method in ("proposed", "sup"):
        for amp in ("none", "bf16"):
            runs[f"{method}/{amp}"] = _train_run(sizes, method, amp, physics, pool)
    comparison, speedups = {}, {}
    for method in ("proposed", "sup"):
        fp32, bf16 = runs[f"{method}/none"], runs[f"{method}/bf16"]
        comparison[method] = _curve_difference(fp32["curve"], bf16["curve"], sizes.compare_steps)
        speedups[method] = round(bf16["steps_per_second"] / fp32["steps_per_second"], 3)
    curves_agree = all(
        comparison[m]["loss"]["mean_relative"] <= BF16_MAX_CURVE_DIFFERENCE for m in comparison
    )
    faster = all(s >= BF16_MIN_SPEEDUP for s in speedups.values())
    choice = "bf16" if curves_agree and faster else "float32"
    differences = ", ".join(f"{m} {c['loss']['mean_relative']:.3g}" for m, c in comparison.items())
    reason = (
        f"bf16 speed-up {', '.join(f'{m} {s}x' for m, s in speedups.items())} (needs >= "
        f"{BF16_MIN_SPEEDUP}x); mean relative loss difference over the first {sizes.compare_steps} steps "
        f"{differences} (needs <= {BF16_MAX_CURVE_DIFFERENCE})"
    )
    return {
        "status": "ok",
        "model": sizes.model,
        "model_options": sizes.model_options,
        "parameters": parameters,
        "batch": sizes.batch,
        "patch": sizes.patch,
        "task": f"{TASK} {KERNEL} noise {NOISE_LEVEL:g}",
        "steps": sizes.steps,
        "timed_after_step": sizes.warmup,
        "runs": runs,
        "bf16_speedup": speedups,
        "bf16_against_float32": comparison,
        "recommendation": {"amp_auto": choice, "device": device.type, "reason": reason},
    }


# ---------------------------------------------------------------------------------------------
# 3. sei train under torchrun: one process (train, checkpoint, resume), then two sharing one device


def _metrics_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def _checkpoint_step(run_dir: Path) -> int | None:
    import torch

    from sei.training.checkpoint import latest_checkpoint

    path = latest_checkpoint(run_dir) if run_dir.exists() else None
    return None if path is None else int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def _torchrun(processes: int, arguments: list[str], shared_device: bool) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    if shared_device:  # every process on device 0 (torchrun would give process 1 cuda:1, which one GPU lacks)
        return [*command, str(Path(__file__).resolve()), WORKER_FLAG, *arguments]
    return [*command, "-m", "sei", *arguments]


def section_distributed(sizes: Sizes, work: Path) -> dict[str, Any]:
    """One process trains K steps and checkpoints; two processes sharing the one device resume it to 2K
    (gloo on the CPU; NCCL on a GPU, which may refuse two ranks on one GPU: then one process resumes)."""
    photos = _photo_folder(sizes, work)
    run_dir = work / "ddp_run"
    config = work / "ddp.toml"
    config.write_text(
        "log_interval = 1\n"
    )  # every step in metrics.csv, to check that the resumed run continues
    k = sizes.ddp_steps
    first = [
        "train",
        "--config",
        str(config),
        "--method",
        "proposed",
        "--preset",
        "paper",
        "--dataset",
        str(photos),
        "--resize",
        str(sizes.resize),
        "--batch_size",
        str(sizes.batch),
        "--patch_size",
        str(sizes.patch),
        "--val_images",
        "0",
        "--val_interval",
        "0",
        "--checkpoint_interval",
        str(k),
        "--max_steps",
        str(k),
        "--device",
        sizes.device,
        "--quiet",
        "--out_dir",
        str(run_dir),
        *sizes.extra_train_args,
    ]
    resume = [
        "train",
        "--resume",
        str(run_dir),
        "--max_steps",
        str(2 * k),
        "--device",
        sizes.device,
        "--quiet",
    ]
    launches: dict[str, dict[str, Any]] = {}

    def launch(
        name: str, processes: int, arguments: list[str], shared: bool = False, timeout: int | None = None
    ) -> dict[str, Any]:
        outcome = _run(_torchrun(processes, arguments, shared), timeout or sizes.timeout)
        outcome.update(
            processes=processes,
            steps_logged=_metrics_steps(run_dir),
            checkpoint_step=_checkpoint_step(run_dir),
        )
        if outcome["rc"] == 0:
            outcome.pop("output_tail")
        launches[name] = outcome
        return outcome

    single = launch("one_process", 1, first)
    shared = launch(
        "two_processes_one_device_resumed", 2, resume, shared=True, timeout=min(sizes.timeout, 120)
    )
    shared_ok = shared["rc"] == 0 and shared["checkpoint_step"] == 2 * k
    record: dict[str, Any] = {
        "backend": "nccl" if sizes.device == "cuda" else "gloo",
        "model": sizes.model,
        "steps_per_launch": k,
        "two_processes_one_device": "ok" if shared_ok else "refused",
    }
    resumed = shared
    if not shared_ok and sizes.device == "cuda":
        # NCCL alone, without sei: does it accept two ranks on one GPU? Then resume with one process.
        record["nccl_probe_two_ranks_one_gpu"] = _run(_torchrun(2, ["nccl-probe"], shared_device=True), 60)
        resumed = launch("one_process_resumed", 1, resume)
    check = {
        "resumed_by": f"{resumed['processes']} process(es)",
        "resumed_from_step": single["checkpoint_step"],
        "first_new_step": next((s for s in resumed["steps_logged"] if s not in single["steps_logged"]), None),
        "final_step": resumed["checkpoint_step"],
        "steps_logged": resumed["steps_logged"],
    }
    check["continued"] = (
        single["rc"] == 0
        and resumed["rc"] == 0
        and check["resumed_from_step"] == k
        and check["first_new_step"] == k + 1
        and check["steps_logged"] == list(range(1, 2 * k + 1))
        and check["final_step"] == 2 * k
    )
    record.update(launches=launches, resume=check)
    # on a GPU, two processes on one device are NCCL's call (recorded); on the CPU, gloo must take them
    record["status"] = "ok" if check["continued"] and (shared_ok or sizes.device == "cuda") else "failed"
    return record


def worker(arguments: list[str]) -> int:
    """A torchrun worker that shares device 0 with the others: ``sei`` with ``arguments``, or the NCCL
    probe."""
    os.environ["LOCAL_RANK"] = "0"
    if arguments[:1] == ["nccl-probe"]:
        import torch
        import torch.distributed as dist

        torch.cuda.set_device(0)
        dist.init_process_group("nccl")
        value = torch.ones(1, device="cuda")
        dist.all_reduce(value)
        print(f"rank {dist.get_rank()}: all_reduce gave {value.item()} (expected {dist.get_world_size()})")
        dist.destroy_process_group()
        return 0
    from sei.cli import main

    return main(arguments)


# ---------------------------------------------------------------------------------------------
# 4. sei reconstruct of a large image, tiled and whole


def section_reconstruct(sizes: Sizes, work: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from sei.cli import main
    from sei.evaluation import psnr
    from sei.imageio import read_image, write_image
    from sei.inference import load_reconstructor, tiled
    from sei.physics import make_physics

    device = torch.device(sizes.device)
    # a 4:3 frame with both sides multiples of 8, so that whole-image inference needs no padding: a padded
    # border and a tile's unpadded one are not the same input, and the comparison would measure that
    height = int(round(math.sqrt(sizes.megapixels * 1e6 * 3 / 4) / 24)) * 24
    width = height * 4 // 3
    sharp = F.interpolate(
        _astronaut()[None], size=(height, width), mode="bicubic", align_corners=False
    ).clamp(0, 1)
    physics = make_physics(TASK, kernel=KERNEL, noise_level=NOISE_LEVEL).to(device)
    with torch.no_grad():
        measured = physics.measure(sharp.to(device), seed=0).cpu()
    source = work / "large.png"
    write_image(measured[0], source)
    del sharp, measured
    megapixels = height * width / 1e6
    record: dict[str, Any] = {
        "image": f"{width}x{height} ({megapixels:.1f} MP), scikit-image astronaut upsampled, "
        f"{KERNEL} blur, noise {NOISE_LEVEL:g}, 8-bit PNG",
        "weights": WEIGHTS,
        "runs": {},
    }
    outputs = {}
    for label, tile in (("tiled", sizes.tile), ("whole", 0)):
        target = work / f"large_{label}.npy"
        _reset_peak(device)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(
                [
                    "reconstruct",
                    str(source),
                    str(target),
                    "--weights",
                    WEIGHTS,
                    "--device",
                    sizes.device,
                    "--tile",
                    str(tile),
                ]
            )
        _sync(device)
        seconds = time.perf_counter() - started
        run = {
            "tile": tile,
            "rc": rc,
            "command_seconds": round(seconds, 2),
            "command_megapixels_per_second": round(megapixels / seconds, 3),
            "command_peak_memory_mib": _peak_mib(device),
        }
        # the network alone (image already on the device; PNG decoding and .npy writing left out)
        loaded = load_reconstructor(WEIGHTS, None, TASK, None, None, None, device)
        y = read_image(source)[None].to(device)
        _reset_peak(device)
        _sync(device)
        started = time.perf_counter()
        with torch.no_grad():
            estimate = tiled(loaded.reconstruct, y, 1, tile) if tile else loaded.reconstruct(y)
        _sync(device)
        seconds = time.perf_counter() - started
        run.update(
            inference_seconds=round(seconds, 3),
            inference_megapixels_per_second=round(megapixels / seconds, 3),
            inference_peak_memory_mib=_peak_mib(device),
        )
        del estimate, y, loaded
        record["runs"][label] = run
        outputs[label] = np.load(target) if rc == 0 and target.exists() else None
    if outputs["tiled"] is not None and outputs["whole"] is not None:
        difference = relative_difference(outputs["whole"], outputs["tiled"])
        # the float outputs as written (.npy), neither clamped nor quantised: how far tiling moves them
        agreement = psnr(torch.from_numpy(outputs["tiled"]), torch.from_numpy(outputs["whole"]))
        record["tiled_against_whole"] = {**difference, "psnr_db": round(agreement, 2)}
    record["status"] = (
        "ok"
        if all(r["rc"] == 0 for r in record["runs"].values()) and "tiled_against_whole" in record
        else "failed"
    )
    return record


# ---------------------------------------------------------------------------------------------
# 5. CPU against CUDA (or float64 against float32) on the same inputs


class _FixedNoise:
    """An operator whose noise is one fixed draw (made once, in float64 on the CPU), so the equivariance
    loss re-measures with the same noise in every precision and on every device."""

    def __init__(self, physics: Any, noise: Any) -> None:
        self.physics, self.fixed = physics, noise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.physics, name)

    def noise(self, x: Any, rng: Any = None, **kwargs: Any) -> Any:
        return x + self.physics.sigma * self.fixed.to(x)


@contextlib.contextmanager
def _tf32(allowed: bool | None):
    """TF32 on or off for matrix products and convolutions (``None``: leave torch's settings)."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if allowed is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _agreement_values(
    setting: tuple[str, str], sizes: Sizes, inputs: dict[str, Any], states: dict[str, Any]
) -> dict[str, Any]:
    """Every compared quantity, computed on one (device, dtype) from the same float64 inputs and weights."""
    import torch

    from sei.losses import build_method
    from sei.models import create_model
    from sei.physics import make_physics

    device, dtype = torch.device(setting[0]), getattr(torch, setting[1])
    cast = {name: value.to(device=device, dtype=dtype) for name, value in inputs.items()}
    values: dict[str, Any] = {}
    blur = make_physics(TASK, kernel=KERNEL, noise_level=NOISE_LEVEL).to(device)
    sr = make_physics("sr", sr_factor=2, noise_level=NOISE_LEVEL).to(device)
    values["physics/blur A"] = blur.A(cast["x"])
    values["physics/blur A_adjoint"] = blur.A_adjoint(cast["y"])
    values["physics/sr_x2 A"] = sr.A(cast["x"])
    values["physics/sr_x2 A_adjoint"] = sr.A_adjoint(cast["y_sr"])
    networks = {}
    for name in ("unet-small", sizes.agreement_model):
        network = create_model(name, task=TASK)
        network.load_state_dict(states[name])
        networks[name] = network.to(device=device, dtype=dtype).eval()
        with torch.no_grad():
            values[f"network/{name} forward"] = networks[name](cast["y"])
    net = networks["unet-small"]  # no dropout or batch norm: train and eval agree
    objective = build_method("proposed", blur, autocast_dtype=None)
    sure, equivariance = objective.losses["sure"], objective.losses["equivariance"]
    x_net = net(cast["y"])
    values["sure/SURE value"] = sure(x_net, None, cast["y"], blur, net, probe=cast["probe"]).mean()
    generator = torch.Generator().manual_seed(
        1
    )  # on the CPU for every device: its draws (float32) are the same everywhere
    values["loss/equivariance value"] = equivariance(
        x_net, None, cast["y"], _FixedNoise(blur, cast["noise"]), net, rng=generator
    ).mean()
    if (
        sizes.agreement_dtypes[0] == sizes.agreement_dtypes[1]
    ):  # same dtype on both sides: the objective's own draws agree too
        terms = objective(net, cast["y"], blur, rng=torch.Generator().manual_seed(2))
        values["sure/objective (defaults) sure term"] = terms["sure"]
        values["loss/objective (defaults) equivariance term"] = terms["equivariance"]
    return {name: value.detach().double().cpu() for name, value in values.items()}


def section_agreement(sizes: Sizes, work: Path) -> dict[str, Any]:
    import torch

    from sei.models import create_model
    from sei.physics import make_physics

    blur = make_physics(TASK, kernel=KERNEL, noise_level=NOISE_LEVEL)
    sr = make_physics("sr", sr_factor=2, noise_level=NOISE_LEVEL)
    x = _astronaut()[None, :, 80:144, 200:264].double()  # 64x64, the face and the helmet's edge
    generator = torch.Generator().manual_seed(0)
    y = blur.A(x) + blur.sigma * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    from sei.losses import interior_mask

    inputs = {
        "x": x,
        "y": y,
        "y_sr": sr.A(x) + sr.sigma * torch.randn(1, 3, 32, 32, generator=generator, dtype=torch.float64),
        "probe": torch.randn(x.shape, generator=generator, dtype=torch.float64)
        * interior_mask(x, blur.margin),
        "noise": torch.randn(x.shape, generator=generator, dtype=torch.float64),
    }
    states = {}
    for index, name in enumerate(("unet-small", sizes.agreement_model)):
        torch.manual_seed(index)
        states[name] = create_model(name, task=TASK).state_dict()
    reference_setting = ("cpu", sizes.agreement_dtypes[0])
    compared_setting = (sizes.device, sizes.agreement_dtypes[1])
    passes = [("strict", False), ("defaults", None)] if sizes.device == "cuda" else [("strict", None)]
    record: dict[str, Any] = {
        "reference": "/".join(reference_setting),
        "compared": "/".join(compared_setting),
        "tolerances": {p: TOLERANCES[p] for p, _ in passes},
        "passes": {},
    }
    with _tf32(False):  # the reference runs on the CPU, where TF32 does not apply; set for clarity
        reference = _agreement_values(reference_setting, sizes, inputs, states)
    all_within = True
    for label, tf32 in passes:
        with _tf32(tf32):
            compared = _agreement_values(compared_setting, sizes, inputs, states)
        entries = {}
        for name, value in reference.items():
            kind = name.split("/")[0]
            scale = blur.sigma**2 if kind == "sure" else None
            entry = relative_difference(value, compared[name], scale)
            entry.update(
                tolerance=TOLERANCES[label][kind], unit="sigma^2" if kind == "sure" else "of max |reference|"
            )
            entry["within"] = entry["relative"] <= entry["tolerance"]
            entries[name] = entry
            if label == "strict":
                all_within &= entry["within"]
        record["passes"][label] = entries
    record["status"] = "ok" if all_within else "failed"
    return record


# ---------------------------------------------------------------------------------------------
# the run


def machine(sizes: Sizes) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    for package in ("deepinv", "numpy"):
        with contextlib.suppress(Exception):
            info[package] = __import__(package).__version__
    with contextlib.suppress(Exception):
        info["sei_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    if sizes.device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            compute_capability=f"{properties.major}.{properties.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            tf32_defaults={
                "matmul": torch.backends.cuda.matmul.allow_tf32,
                "cudnn": torch.backends.cudnn.allow_tf32,
            },
        )
        with contextlib.suppress(Exception):
            version = torch.cuda.nccl.version()
            info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return info


def _write(report: dict[str, Any], path: Path) -> None:
    """Atomically: a run killed while writing leaves the previous complete file."""
    from sei.runtime import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [WORKER_FLAG]:
        return worker(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu", action="store_true", help="tiny sizes on the CPU (float64 against float32 in section 5)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON file (default benchmarks/results/gpu_check[_cpu].json)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="section 2's steps per run (default 200 on CUDA, 4 with --cpu)",
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch folder (default: a temporary one, removed at the end)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --cpu for the small CPU version", file=sys.stderr)
        return 2
    sizes = CPU_SIZES if args.cpu else CUDA_SIZES
    if args.steps is not None:
        if args.steps <= sizes.warmup:
            parser.error(f"--steps must be larger than the {sizes.warmup} warm-up steps")
        sizes = Sizes(
            **{**asdict(sizes), "steps": args.steps, "compare_steps": min(sizes.compare_steps, args.steps)}
        )
    out = args.out or HERE / "results" / ("gpu_check_cpu.json" if args.cpu else "gpu_check.json")
    work = args.work or Path(tempfile.mkdtemp(prefix="sei_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "script": "benchmarks/gpu_check.py",
        "mode": sizes.device,
        "command": " ".join(["python", "benchmarks/gpu_check.py", *argv]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": asdict(sizes),
        "machine": machine(sizes),
        "sections": {},
    }
    functions = {
        "tests": section_tests,
        "training": section_training,
        "distributed": section_distributed,
        "reconstruct": section_reconstruct,
        "agreement": section_agreement,
    }
    try:
        for name in SECTIONS:
            if name not in chosen:
                report["sections"][name] = {"status": "skipped"}
                continue
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            section_started = time.perf_counter()
            try:
                result = functions[name](sizes, work)
            except Exception as error:  # noqa: BLE001 - recorded; the other sections still run
                result = {
                    "status": "error",
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            result["section_seconds"] = round(time.perf_counter() - section_started, 2)
            report["sections"][name] = result
            report["seconds"] = round(time.perf_counter() - started, 2)
            _write(report, out)
            print(
                f"gpu_check: {name}: {result['status']} ({result['section_seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 2)
    _write(report, out)
    print(f"gpu_check: wrote {out} ({report['seconds']} s)")
    return 0 if all(s["status"] in ("ok", "skipped") for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The practitioner's path: restore a folder of one's own degraded images within a time budget.

From measurements and the forward model alone (a PSF, or an SR factor; the noise level estimated
when not given), :func:`restore`:

1. estimates the noise level from the measurements (``auto``) and prints it; with Poisson-Gaussian noise
   (``noise="poisson-gaussian"``, photon-limited data) the gain and the Gaussian level, each ``auto`` one
   estimated (:func:`sei.noise_estimation.estimate_poisson_gaussian`), and training uses PG-SURE;
2. picks the closest shipped model as the starting point (same task and SR factor; the same noise model
   where one is shipped; for deblurring the shipped kernel nearest the PSF,
   :func:`sei.inference.closest_shipped`: its image prior carries over, the fine-tuning adapts it to the
   PSF);
3. fine-tunes it with SEI on those very measurements, for as many steps as fit the budget left
   after the reconstruction it will have to do (measured by timing the network on one tile);
4. restores every measurement (tiled inference) and writes the images, side-by-side figures and a
   ``summary.json``; the trained run (weights, checkpoints, curves) stays in ``OUTPUT/run``, so
   an interrupted run resumes (``resume=True``) and the weights serve ``sei reconstruct`` later.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sei.errors import SeiUserError

DEFAULT_TIME_LIMIT = 600.0  # seconds: ten minutes, the budget the benchmark holds the path to
FINISH_SECONDS = 5.0  # the run's last validation, weights file and loss figure
MIN_TRAINING_SECONDS = 20.0  # below this, training cannot improve on the starting point
INFERENCE_SAFETY = 2.0  # the timed tile underestimates a folder's reconstruction (overlaps, writing, figures)


@dataclass
class RestoreResult:
    """What :func:`restore` did: the files it wrote and how it spent the budget."""

    outputs: list[Path] = field(default_factory=list)
    noise_level: float = 0.0
    noise_estimated: bool = False
    noise_model: str = "gaussian"
    gain: float | None = None  # Poisson gain in 8-bit units (Poisson-Gaussian noise only)
    gain_estimated: bool = False
    init: str | None = None
    steps: int = 0
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    weights: Path | None = None


def _say(message: str) -> None:
    print(f"sei: {message}", file=sys.stderr, flush=True)


def _pairs(inputs: Path, output: Path) -> list[tuple[Path, Path]]:
    from sei.imageio import MEASUREMENT_SUFFIXES, list_images

    if inputs.is_dir():
        sources = list_images(inputs, MEASUREMENT_SUFFIXES)
        if not sources:
            raise SeiUserError(f"no measurements ({', '.join(MEASUREMENT_SUFFIXES)}) found in {inputs}")
        return [(source, output / source.relative_to(inputs)) for source in sources]
    if inputs.is_file():
        return [(inputs, output / inputs.name)]
    raise SeiUserError(f"input not found: {inputs}")


def _target(path: Path, bits: int) -> Path:
    """Restored images keep the input's format; a float input (``.npy``, float TIFF) stays float
    (``.npy``)."""
    if bits == 32:
        return path.with_suffix(".npy")
    return path if path.suffix.lower() in (".png", ".tif", ".tiff") else path.with_suffix(".png")


def _resolve_init(
    init: str | None, task: str, kernel: Any, sr_factor: int | None, noise_level: float, gain: float | None
) -> str | None:
    from sei.inference import closest_shipped

    if init in (None, "none"):
        return None
    if init != "auto":
        return init
    from sei.problem import GAUSSIAN, POISSON_GAUSSIAN

    noise_model = GAUSSIAN if gain is None else POISSON_GAUSSIAN
    name = closest_shipped(task, kernel, sr_factor, noise_level, noise_model=noise_model, gain=gain)
    if name is None:
        _say("no shipped model for this task: training from scratch")
    return name


def _poisson_gaussian_noise(
    measurements: list[torch.Tensor], noise_level: float | str, gain: float | str
) -> tuple[float, float]:
    """Poisson-Gaussian noise: (level, gain) in 8-bit units, each ``auto`` one estimated (printed); the
    measurements checked for negative values that the noise cannot explain."""
    from sei.noise_estimation import resolve_poisson_gaussian
    from sei.physics.noise import check_measurements_nonnegative

    level, gain_level, estimate = resolve_poisson_gaussian(measurements, noise_level, gain)
    if estimate is not None:
        _say(
            f"estimated Poisson-Gaussian noise from {len(measurements)} measurement(s): gain "
            f"{estimate.gain_level:.3g}, "
            f"noise level {estimate.noise_level:.3g} (8-bit units)"
        )
    check_measurements_nonnegative(measurements, level)
    return level, gain_level


def _average_std(measurements: list[torch.Tensor], level: float, gain_level: float) -> float:
    r"""The std of Poisson-Gaussian noise averaged over the measurements, in 8-bit units:
    :math:`\sqrt{\gamma\, \bar y + \sigma^2}`."""
    mean = sum(float(y.clamp_min(0).mean()) for y in measurements) / len(measurements)
    return (gain_level * 255.0 * mean + level**2) ** 0.5


def _inference_seconds(
    init: str | None,
    config: Any,
    measurements: list[torch.Tensor],
    tile: int,
    device: torch.device,
    passes: int = 1,
) -> float:
    """Predicted time to reconstruct every measurement: one tile through the network, timed, scaled by the
    pixel count and by the network ``passes`` per tile (the symmetry ensemble's)."""
    from sei.models import create_model

    model = (
        create_model(config.model, task=config.task, sr_factor=config.sr_factor, **config.model_options)
        .to(device)
        .eval()
    )
    probe = measurements[0][None, :, :tile, :tile].to(device)
    with torch.no_grad():
        model(probe)  # warm-up: first calls pay allocations
        started = time.perf_counter()
        model(probe)
        per_pixel = (time.perf_counter() - started) / probe[0, 0].numel()
    pixels = sum(y[0].numel() for y in measurements)
    return INFERENCE_SAFETY * passes * per_pixel * pixels + 0.5 * len(measurements)  # + figures and files


def restore(
    inputs: str | Path,
    output: str | Path,
    task: str = "deblurring",
    kernel: Any = None,
    sr_factor: int | None = None,
    noise_level: float | str = "auto",
    noise: str = "gaussian",
    gain: float | str | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    init: str | None = "auto",
    device: str = "cpu",
    tile: int = 256,
    overlap: int = 32,
    resume: bool = False,
    overwrite: bool = False,
    side_by_side: bool = True,
    progress: bool = True,
    seed: int = 0,
    ensemble: bool = False,
    started: float | None = None,
    on_step: Any = None,
) -> RestoreResult:
    """Train SEI on the measurements in ``inputs`` within ``time_limit`` seconds, then restore them into
    ``output``.

    :param kernel: the PSF for deblurring (a file or ``Gaussian_R<std>``/``Box_R<r>``); required for
        deblurring.
    :param noise_level: std in 8-bit units, or ``"auto"`` (estimated from the measurements).
    :param noise: the noise model, ``"gaussian"`` or ``"poisson-gaussian"`` (training then uses PG-SURE).
    :param gain: Poisson-Gaussian only (and required there): the gain in 8-bit units, or ``"auto"``.
    :param init: ``"auto"`` (the closest shipped model), ``"none"`` (from scratch), or a weights name or file.
    :param resume: continue the run already in ``output/run`` with a fresh budget.
    :param ensemble: restore with the symmetry ensemble (:func:`sei.inference.symmetry_ensemble`: one network
        pass per flip or quarter turn that the forward model commutes with); the reserved inference time grows
        to match.
    :param started: ``time.perf_counter()`` when the budget began (default: now; the CLI passes its own start,
        so that loading Python and torch counts too).
    :param on_step: called with the training's :class:`~sei.training.loop.RunState` after every step (see
        :func:`~sei.training.loop.train`).
    """
    from sei.data import MeasurementFolder
    from sei.figures import image_grid
    from sei.imageio import bit_depth, read_image, write_image
    from sei.inference import ensemble_symmetries, symmetry_ensemble, tiled
    from sei.physics import make_physics
    from sei.physics.noise import AUTO, check_noise_model
    from sei.problem import DEFAULT_NOISE_LEVEL, POISSON_GAUSSIAN
    from sei.runtime import resolve_device
    from sei.training.checkpoint import latest_checkpoint, load_checkpoint
    from sei.training.config import TrainConfig, run_config
    from sei.training.loop import train
    from sei.weights import load_weights_with_physics

    started = time.perf_counter() if started is None else started
    if not time_limit > 0:
        raise SeiUserError(f"the time limit must be positive, got {time_limit} s")
    if task == "deblurring" and kernel is None:
        raise SeiUserError(
            "restoring a blur needs its PSF: pass --kernel FILE (.npy, .pt, image) or a name such as "
            "Gaussian_R2"
        )
    # the model's name, and a gain > 0 where one is needed (auto is estimated below)
    noise, _ = check_noise_model(noise, 1.0 if gain == AUTO else gain)
    poisson = noise == POISSON_GAUSSIAN
    inputs, output = Path(inputs), Path(output)
    run_dir = output / "run"
    if run_dir.exists() and not (resume or overwrite):
        raise SeiUserError(
            f"{output} already holds a restoration; pass --resume to continue its training or --overwrite to "
            "start again"
        )
    pairs = _pairs(inputs, output)
    device_ = resolve_device(device)
    folder = MeasurementFolder(inputs)  # reads and checks every file (NaN, unreadable) before any work
    measurements = [y for _, _, y in folder]
    if isinstance(kernel, str | Path) and Path(str(kernel)).expanduser().is_file():
        kernel = str(Path(str(kernel)).expanduser().resolve())  # the run's config names it from any folder
    physics = make_physics(
        task,
        kernel=kernel if task == "deblurring" else None,
        sr_factor=sr_factor,
        noise_level=DEFAULT_NOISE_LEVEL,
    )
    estimated = noise_level == AUTO
    gain_level = None
    if poisson:
        level, gain_level = _poisson_gaussian_noise(measurements, noise_level, gain)
        # the shipped models are Gaussian: the nearest is the one at the data's average noise std
        gaussian_level = _average_std(measurements, level, gain_level)
    elif estimated:
        from sei.noise_estimation import estimate_noise_level

        estimate = estimate_noise_level(measurements, physics=physics)
        level = float(estimate.level)
        _say(
            f"estimated noise level {level:.3g} (8-bit units) from {len(measurements)} measurement(s) "
            f"({estimate.method})"
        )
    else:
        level = float(noise_level)
    init_name = (
        None
        if resume
        else _resolve_init(init, task, kernel, sr_factor, gaussian_level if poisson else level, gain_level)
    )
    if init_name is not None:
        _say(f"starting from {init_name}")
    given = TrainConfig(
        task=task,
        kernel=kernel if task == "deblurring" else None,
        sr_factor=sr_factor if task == "sr" else None,
        noise_level=AUTO if estimated else level,
        noise_estimate=round(level, 4) if estimated else None,
        noise=noise,
        gain=gain if poisson else None,
        gain_estimate=round(gain_level, 4) if gain == AUTO else None,
        measurements=str(inputs.resolve()),
        method="proposed",
        init=init_name,
        seed=seed,
        device=device,
        val_interval=0,
        time_limit=time_limit,
    )
    checkpoint = None
    if resume:  # the run's own configuration, with this session's device and budget
        path = latest_checkpoint(run_dir)
        if path is None:
            raise SeiUserError(f"nothing to resume in {run_dir}: no checkpoint found")
        checkpoint = load_checkpoint(path)
        given = TrainConfig(device=device, time_limit=time_limit)
    config = run_config(given, checkpoint)  # resolved once, here; the training loop consumes it
    symmetries = ensemble_symmetries(physics) if ensemble else (0,)
    reserve = _inference_seconds(init_name, config, measurements, tile, device_, passes=len(symmetries))
    budget = time_limit - (time.perf_counter() - started) - reserve - FINISH_SECONDS
    if budget < MIN_TRAINING_SECONDS:
        raise SeiUserError(
            f"a time limit of {time_limit:g} s leaves {max(budget, 0):.0f} s for training once the "
            f"{len(measurements)} "
            f"measurement(s) are read and reconstructed (about {reserve:.0f} s); give at least "
            f"{time_limit - budget + MIN_TRAINING_SECONDS:.0f} s"
        )
    config = dataclasses.replace(config, time_limit=budget)
    state = train(
        config,
        run_dir,
        resume="auto" if resume else None,
        overwrite=overwrite,
        progress=progress,
        on_step=on_step,
    )
    network, _, trained_physics = load_weights_with_physics(
        run_dir / "weights.safetensors", device=str(device_)
    )
    scale = trained_physics.scale
    reconstruct = symmetry_ensemble(network, symmetries)
    result = RestoreResult(
        noise_level=state.noise_level or level,
        noise_estimated=estimated,
        noise_model=noise,
        gain=getattr(trained_physics, "gain_level", None) if poisson else None,
        gain_estimated=gain == AUTO,
        init=init_name,
        steps=state.step,
        weights=run_dir / "weights.safetensors",
    )
    result.train_seconds = round(time.perf_counter() - started, 1)
    items = list(zip(pairs, measurements, strict=True))
    if progress:
        from sei.runtime import progress_bar

        items = progress_bar(items, desc="restoring", unit="image")
    for (source, target), y in items:
        bits = bit_depth(source)
        target = _target(target, bits)
        with torch.no_grad():
            estimate = tiled(reconstruct, y[None].to(device_), scale, tile, overlap)[0].float().cpu()
        if (
            read_image(source, channels=None).shape[0] == 1
        ):  # a grayscale input comes back grayscale (and 16-bit if it was)
            estimate = estimate.mean(0, keepdim=True)
        write_image(estimate, target, bits=16 if bits == 16 else 8)
        result.outputs.append(target)
        if side_by_side:
            figure = output / "side_by_side" / target.relative_to(output).with_suffix(".png")
            image_grid([[("measurement", y), ("restored (SEI)", estimate)]], figure)
    result.total_seconds = round(time.perf_counter() - started, 1)
    summary = {
        "inputs": str(inputs),
        "images": len(result.outputs),
        "task": trained_physics.describe(),
        "noise_level": result.noise_level,
        "noise_level_estimated": estimated,
        "noise_model": noise,
        **({"gain": result.gain, "gain_estimated": result.gain_estimated} if poisson else {}),
        "init": init_name,
        "steps": result.steps,
        "ensemble": len(symmetries),
        "time_limit_s": time_limit,
        "seconds_until_trained": result.train_seconds,
        "total_seconds": result.total_seconds,
        "weights": str(result.weights),
        "outputs": [str(path) for path in result.outputs],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return result

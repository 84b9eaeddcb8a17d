"""The configuration of a training run: one dataclass, the presets that fill its ``None`` fields, and
how a resumed run or a run started from weights (``--init``) changes it.

The configuration is resolved once, at the boundary, by :func:`run_config` (``sei train`` and ``sei
restore`` call it before any work): the result is a :class:`ResolvedConfig`, which the training loop
consumes as it is. (A plain :class:`TrainConfig` given to :func:`sei.training.train` by a library caller
is resolved there, by the same function.)"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from sei.errors import SeiUserError
from sei.physics.noise import parse_gain, parse_noise_level
from sei.problem import (
    DEFAULT_KERNEL,
    DEFAULT_METHOD,
    DEFAULT_NOISE_LEVEL,
    DEFAULT_NOISE_MODEL,
    DEFAULT_SR_FACTOR,
    DEFAULT_TASK,
    GROUND_TRUTH_METHODS,
    METHODS,
    POISSON_GAUSSIAN,
    SURE_FREE_METHODS,
    canonical_method,
)
from sei.runtime import AMP_DTYPES, parse_duration


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``OUT/config.json`` and in checkpoints."""

    # task
    task: str = DEFAULT_TASK  # "deblurring" or "sr" (sei.problem.TASKS)
    kernel: str | None = None  # deblurring kernel name or file (None: sei.problem.DEFAULT_KERNEL)
    sr_factor: int | None = None  # SR factor (None: sei.problem.DEFAULT_SR_FACTOR)
    noise_level: float | str = (
        DEFAULT_NOISE_LEVEL  # Gaussian noise std in 8-bit units, or "auto": estimated from --measurements
    )
    noise_estimate: float | None = (
        None  # with "auto": the estimate, filled in by the run (a resumed run keeps it)
    )
    noise: str = DEFAULT_NOISE_MODEL  # noise model: gaussian | poisson-gaussian (sei.physics.noise)
    gain: float | str | None = None  # Poisson gain in 8-bit units, or "auto" (poisson-gaussian only)
    gain_estimate: float | None = None  # with gain "auto": the estimate, filled in by the run
    # data
    dataset: str = "samples"  # div2k | urban100 | ct | samples | a folder of images
    measurements: str | None = None  # a folder of measurements only (no ground truth anywhere)
    data_root: str | None = None  # where datasets live (None: $SEI_DATA_ROOT or ~/.cache/sei/data)
    download: bool = False  # download the dataset if missing
    resize: int | None = 256  # short side of the training images (None keeps native size)
    patch_size: int = 48  # patch side in measurement pixels
    batch_size: int = 8  # global batch size (split across processes)
    num_workers: int = 0  # DataLoader workers
    val_images: int = 4  # held-out images for the periodic validation
    val_dataset: str | None = None  # where they come from (None: the test split of --dataset)
    # method
    method: str = DEFAULT_METHOD  # proposed|sei, sup, css, ei-shift, ei-rotate, sure
    alpha: float = 1.0  # weight of the equivariance term
    stop_gradient: bool = True  # detach the transformed estimate in the equivariance term
    scale_factors: tuple[float, ...] = (0.75, 0.5)  # shrink factors of the scale transform
    scale_antialias: bool = False  # low-pass before shrinking (the paper's transform has none)
    scale_interpolation: str = "bicubic"  # the scale transform's interpolation: bicubic | bilinear
    sure_divergence: str = "finite-difference"  # the paper's | exact (cannot be gamed: sei.losses.SureLoss)
    stop_on_gaming: bool = False  # end at the last validation before the network games the finite difference
    unsure: bool = False  # learn the noise level (UNSURE): noise_level is only the initial guess
    # model
    model: str | None = None  # registry name (None: the preset's)
    model_options: dict[str, Any] = field(
        default_factory=dict
    )  # constructor overrides, e.g. {"channels": 16}
    init: str | None = (
        None  # start from these weights (a file or a shipped / paper name); architecture from its metadata
    )
    # optimisation
    lr: float | None = None  # Adam learning rate (None: the preset's, per task)
    epochs: float | None = None  # passes over the training images (used when max_steps is None)
    max_steps: int | None = None  # optimizer steps; wins over epochs
    time_limit: float | None = None  # wall-clock budget in seconds: the step count is planned to fit it
    seed: int = 0
    # bookkeeping
    checkpoint_interval: int = 500  # steps between checkpoints
    keep_checkpoints: int = 3  # most recent checkpoints kept on disk
    val_interval: int = 500  # steps between validations (0: only at the end)
    log_interval: int = 10  # steps between rows of metrics.csv
    # hardware
    device: str = "cpu"
    amp: str = (
        "auto"  # auto | none | bf16 | fp16: autocast of the network passes (auto: bf16 where measured to pay)
    )
    compile: bool = False  # torch.compile the network
    preset: str = "cpu"  # which defaults filled the None fields

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scale_factors"] = list(self.scale_factors)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SeiUserError(
                f"unknown configuration key(s): {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
            )
        data = dict(data)
        if isinstance(data.get("time_limit"), str):
            data["time_limit"] = parse_duration(data["time_limit"])
        if isinstance(data.get("noise_level"), str):
            data["noise_level"] = parse_noise_level(data["noise_level"])
        if isinstance(data.get("gain"), str):
            data["gain"] = parse_gain(data["gain"])
        if "scale_factors" in data and data["scale_factors"] is not None:
            data["scale_factors"] = tuple(float(s) for s in data["scale_factors"])
        return cls(**data)


class ResolvedConfig(TrainConfig):
    """A :class:`TrainConfig` that :func:`run_config` resolved: the presets filled in, the resumed run's
    or ``--init``'s settings taken, the combination checked. What training consumes."""

    @classmethod
    def of(cls, config: TrainConfig) -> ResolvedConfig:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


# Defaults that differ between the paper's GPU recipe and the CPU recipe. The paper's epochs are
# per dataset: DIV2K 500, Urban100 4000, CT 100 (about 50-60k steps each).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "model": "swinir",
        "lr": {"deblurring": 1e-4, "sr": 2e-4},
        "epochs": {"div2k": 500, "urban100": 4000, "ct": 100},
    },
    "cpu": {"model": None, "lr": {"deblurring": 5e-4, "sr": 5e-4}, "max_steps": 2000},
}


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the ``None`` fields from the preset and validate the combination."""
    from sei.models import DEFAULT_CPU_MODEL

    if config.preset not in PRESETS:
        raise SeiUserError(f"unknown preset {config.preset!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    updates: dict[str, Any] = {}
    if config.model is None:
        updates["model"] = preset["model"] or DEFAULT_CPU_MODEL
    if config.lr is None:
        updates["lr"] = preset["lr"][config.task]
    if (
        config.max_steps is None and config.epochs is None and config.time_limit is None
    ):  # a budget plans its own steps
        if "max_steps" in preset:
            updates["max_steps"] = preset["max_steps"]
        else:
            updates["epochs"] = preset["epochs"].get(config.dataset, 500)
    if config.task == "deblurring" and config.kernel is None:
        updates["kernel"] = DEFAULT_KERNEL
    if config.task == "sr" and config.sr_factor is None:
        updates["sr_factor"] = DEFAULT_SR_FACTOR
    resolved = dataclasses.replace(config, **updates)
    canonical_method(resolved.method)
    if resolved.batch_size < 1 or resolved.patch_size < 8:
        raise SeiUserError("batch size must be >= 1 and patch size >= 8")
    from sei.losses import SURE_DIVERGENCES

    if resolved.sure_divergence not in SURE_DIVERGENCES:
        raise SeiUserError(
            f"--sure_divergence must be one of {', '.join(SURE_DIVERGENCES)}, got "
            f"{resolved.sure_divergence!r}"
        )
    if resolved.scale_interpolation not in ("bicubic", "bilinear"):
        raise SeiUserError(
            f"scale_interpolation must be bicubic or bilinear, got {resolved.scale_interpolation!r}"
        )
    if resolved.amp not in AMP_DTYPES:
        raise SeiUserError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {resolved.amp!r}")
    if resolved.unsure and METHODS.get(resolved.method) in SURE_FREE_METHODS:
        raise SeiUserError(
            f"--unsure learns the noise level of SURE, and method {resolved.method!r} has no SURE term"
        )
    if resolved.measurements and METHODS.get(resolved.method) in GROUND_TRUTH_METHODS:
        raise SeiUserError("the supervised method needs ground truth; --measurements gives measurements only")
    return resolved


RESUME_OVERRIDES = (
    "device",
    "num_workers",
    "max_steps",
    "epochs",
    "time_limit",
)  # what a resumed run may change


def resumed_config(stored: dict[str, Any], given: TrainConfig) -> TrainConfig:
    """The configuration of a resumed run: the checkpoint's, with the device and workers of this
    session and, when given, a new budget (``max_steps``, ``epochs``, ``time_limit``). A longer budget
    re-plans the learning-rate schedule for the new total (docs/training.md, "Resuming")."""
    updates = {"device": given.device, "num_workers": given.num_workers}
    for name in ("max_steps", "epochs", "time_limit"):
        if getattr(given, name) is not None:
            updates[name] = getattr(given, name)
    if given.max_steps is not None and "epochs" not in updates:
        updates["epochs"] = None
    return TrainConfig.from_dict({**stored, **updates})


def init_model_config(config: TrainConfig) -> TrainConfig:
    """``--init``: the architecture comes from the weights' metadata; a different task or SR factor is
    refused (the network's output size would be wrong), a different kernel or noise level is fine-tuning."""
    _, metadata, _ = load_init(config)
    stored = dict(metadata.get("model") or {})
    name = stored.pop("name", None)
    for key in ("task", "sr_factor"):
        stored.pop(key, None)
    if config.model is not None and config.model != name:
        raise SeiUserError(
            f"--init {config.init} holds a {name} network, but --model {config.model} was asked; drop --model"
        )
    unknown = {k: v for k, v in config.model_options.items() if stored.get(k) != v}
    if unknown:
        raise SeiUserError(
            f"--init {config.init} fixes the network's options; drop model_options {sorted(unknown)}"
        )
    return dataclasses.replace(config, model=name, model_options=stored)


def load_init(config: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    from sei.weights import load_weights_with_physics

    try:
        return load_weights_with_physics(
            config.init,
            task=config.task,
            sr_factor=config.sr_factor if config.task == "sr" else None,
            kernel=None,
        )
    except SeiUserError as error:
        raise SeiUserError(f"--init {config.init}: {error}") from error


def run_config(config: TrainConfig, checkpoint: dict[str, Any] | None) -> ResolvedConfig:
    """The configuration a run trains with, resolved once: the checkpoint's when resuming
    (:func:`resumed_config`), the architecture of ``--init``'s weights, the flag combinations and the
    kernel checked, the presets filled in (:func:`resolve_config`)."""
    if checkpoint is not None:
        config = resumed_config(checkpoint["config"], config)
        if config.max_steps is not None and config.max_steps < int(checkpoint["step"]):
            raise SeiUserError(
                f"the run is already at step {checkpoint['step']}; --max_steps {config.max_steps} cannot "
                "shorten it"
            )
    else:
        if config.task == "deblurring" and config.kernel is not None:
            from sei.physics import get_kernel

            get_kernel(config.kernel)  # a missing or unreadable PSF fails before any work
        if config.init:
            config = init_model_config(config)
    if config.time_limit is not None and not config.time_limit > 0:
        raise SeiUserError(f"the time limit must be positive, got {config.time_limit} s")
    if config.noise_level == "auto" and not config.measurements:
        raise SeiUserError(
            "--noise_level auto estimates the level of given --measurements; with --dataset the measurements "
            "are simulated, at a --noise_level you choose"
        )
    if config.gain == "auto" and not config.measurements:
        raise SeiUserError(
            "--gain auto estimates the gain of given --measurements; with --dataset give a number"
        )
    if config.gain is not None and config.noise != POISSON_GAUSSIAN:
        raise SeiUserError("--gain applies to --noise poisson-gaussian only")
    return ResolvedConfig.of(resolve_config(config))

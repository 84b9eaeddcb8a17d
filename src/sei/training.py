"""Training: one config dataclass, one loop that can be read top to bottom, exact resume.

Everything random in a step is a pure function of ``(seed, step, rank)``: the patches a step sees
(a stream of per-epoch permutations cut into batches), their crops, the SURE probe, the transform
draws, the re-measurement noise and dropout masks. A checkpoint therefore only needs the model,
the optimizer and the step, and a resumed run ends with the same weights as an uninterrupted one,
even on a different number of processes (the global batch is the same stream, split by rank).

Launched by ``torchrun``, the same loop trains with DistributedDataParallel: each rank takes a
disjoint slice of every global batch, and rank 0 alone writes files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sei.errors import SeiUserError
from sei.physics.noise import parse_gain, parse_noise_level
from sei.runtime import AMP_DTYPES, atomic_write, derive_seed, parse_duration, resolve_device

# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``OUT/config.json`` and in checkpoints."""

    # task
    task: str = "deblurring"  # "deblurring" or "sr"
    kernel: str | None = None  # deblurring kernel name or file (None: Gaussian_R2)
    sr_factor: int | None = None  # SR factor (None: 2)
    noise_level: float | str = 5.0  # Gaussian noise std in 8-bit units, or "auto": estimated from --measurements
    noise_estimate: float | None = None  # with "auto": the estimate, filled in by the run (a resumed run keeps it)
    noise: str = "gaussian"  # noise model: gaussian | poisson-gaussian (sei.physics.noise)
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
    method: str = "proposed"  # proposed|sei, sup, css, ei-shift, ei-rotate, sure
    alpha: float = 1.0  # weight of the equivariance term
    stop_gradient: bool = True  # detach the transformed estimate in the equivariance term
    scale_factors: tuple[float, ...] = (0.75, 0.5)  # shrink factors of the scale transform
    sure_divergence: str = "finite-difference"  # the paper's | exact (cannot be gamed: sei.losses.SureLoss)
    stop_on_gaming: bool = False  # end at the last validation before the network games the finite difference
    unsure: bool = False  # learn the noise level (UNSURE): noise_level is only the initial guess
    # model
    model: str | None = None  # registry name (None: the preset's)
    model_options: dict[str, Any] = field(default_factory=dict)  # constructor overrides, e.g. {"channels": 16}
    init: str | None = None  # start from these weights (a file or a shipped / paper name); architecture from its metadata
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
    amp: str = "auto"  # auto | none | bf16 | fp16: autocast of the network passes (auto: bf16 where measured to pay)
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
            raise SeiUserError(f"unknown configuration key(s): {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
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


# Defaults that differ between the paper's GPU recipe and the CPU recipe. The paper's epochs are
# per dataset: DIV2K 500, Urban100 4000, CT 100 (about 50-60k steps each).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"model": "swinir", "lr": {"deblurring": 1e-4, "sr": 2e-4}, "epochs": {"div2k": 500, "urban100": 4000, "ct": 100}},
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
    if config.max_steps is None and config.epochs is None and config.time_limit is None:  # a budget plans its own steps
        if "max_steps" in preset:
            updates["max_steps"] = preset["max_steps"]
        else:
            updates["epochs"] = preset["epochs"].get(config.dataset, 500)
    if config.task == "deblurring" and config.kernel is None:
        updates["kernel"] = "Gaussian_R2"
    if config.task == "sr" and config.sr_factor is None:
        updates["sr_factor"] = 2
    resolved = dataclasses.replace(config, **updates)
    if resolved.batch_size < 1 or resolved.patch_size < 8:
        raise SeiUserError("batch size must be >= 1 and patch size >= 8")
    from sei.losses import METHODS, SURE_DIVERGENCES

    if resolved.sure_divergence not in SURE_DIVERGENCES:
        raise SeiUserError(f"--sure_divergence must be one of {', '.join(SURE_DIVERGENCES)}, got {resolved.sure_divergence!r}")
    if resolved.amp not in AMP_DTYPES:
        raise SeiUserError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {resolved.amp!r}")
    if resolved.unsure and METHODS.get(resolved.method) in ("sup", "css"):
        raise SeiUserError(f"--unsure learns the noise level of SURE, and method {resolved.method!r} has no SURE term")
    if resolved.measurements and resolved.method in ("sup", "supervised"):
        raise SeiUserError("the supervised method needs ground truth; --measurements gives measurements only")
    return resolved



def learning_rate(step: int, total_steps: int, base_lr: float) -> float:
    """The paper's schedule: constant for the first half, then linear decay to 1% of the start.

    >>> [round(learning_rate(s, 100, 1.0), 3) for s in (0, 49, 50, 75, 100)]
    [1.0, 1.0, 1.0, 0.505, 0.01]
    """
    half = total_steps / 2
    if step < half:
        return base_lr
    return base_lr * (1 - 0.99 * min(1.0, (step - half) / max(half, 1)))


# ---------------------------------------------------------------------------------------------
# data order: a stream of per-epoch permutations, cut into global batches, split by rank


class StepBatches(torch.utils.data.Sampler):
    """Yields, for each step from ``start_step``, this rank's share of the global batch as
    ``(epoch, index)`` keys. Position ``p`` of the stream is image ``perm_{p // n}[p % n]``."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise SeiUserError(f"batch size {batch_size} must be divisible by the number of processes {world_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=generator)}
        return self._perms[epoch]

    def keys(self, step: int) -> list[tuple[int, int]]:
        share = self.batch_size // self.world_size
        first = step * self.batch_size + self.rank * share
        return [(p // self.n, int(self._permutation(p // self.n)[p % self.n])) for p in range(first, first + share)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while step < self.total_steps:  # read each time: a time budget re-plans the total during the run
            yield self.keys(step)
            step += 1

    def __len__(self) -> int:
        return self.total_steps - self.start_step


class _KeyedPatches(torch.utils.data.Dataset):
    """Adapts a :class:`sei.data.PatchDataset` to ``(epoch, index)`` keys (each worker has its copy)."""

    def __init__(self, patches: Any) -> None:
        self.patches = patches

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.patches.set_epoch(epoch)
        return self.patches[index]


# ---------------------------------------------------------------------------------------------
# checkpoints: atomic writes, tensors and primitives only (loadable with weights_only=True)


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:08d}.pt"


def latest_checkpoint(location: Path) -> Path | None:
    """The newest complete checkpoint in a run folder (or the file itself)."""
    if location.is_file():
        return location
    folder = location / "checkpoints" if (location / "checkpoints").is_dir() else location
    candidates = sorted(folder.glob("step_*.pt"))
    return candidates[-1] if candidates else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SeiUserError(f"cannot load checkpoint {path}: {error}") from error


# ---------------------------------------------------------------------------------------------
# distributed set-up (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run started the process group, so it ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda") and torch.cuda.is_available():
            # before any collective: NCCL (and broadcast_object_list) use the current device, which
            # would otherwise be cuda:0 on every rank of the node
            torch.cuda.set_device(local_rank)
        owns_group = not dist.is_initialized()
        if owns_group:
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, owns_group=owns_group)

    def mean(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss terms averaged over ranks: the global batch's values (each rank's are means over
        its equal share), logged by rank 0 and seen by every rank, so a divergence stops them all."""
        values = torch.stack([value.detach().float() for value in terms.values()])
        if self.world_size > 1:
            dist.all_reduce(values)  # SUM: gloo has no AVG
            values = values / self.world_size
        return dict(zip(terms, values.tolist(), strict=True))


def _device(config: TrainConfig, distributed: Distributed) -> torch.device:
    device = resolve_device(config.device)  # CUDA asked but absent is the same one-line error everywhere
    if device.type == "cuda":
        if distributed.world_size > 1:
            if config.device != "cuda":
                raise SeiUserError(f"under torchrun pass --device cuda (each process takes cuda:LOCAL_RANK), not {config.device!r}")
            return torch.device("cuda", distributed.local_rank)
    elif device.type not in ("cpu", "mps"):
        raise SeiUserError(f"unknown device {config.device!r}; use cpu, cuda or cuda:N")
    return device


def _download_rank_by_rank(config: TrainConfig, distributed: Distributed) -> None:
    """``--download`` with several processes: left alone they would fetch into one folder at once
    and delete each other's partial files. Rank 0 downloads first, then the first process of every
    other node (a no-op on a shared filesystem), while the rest wait on a gloo group with a timeout
    long enough for DIV2K (NCCL's default of 10 minutes is not)."""
    from datetime import timedelta

    from sei.data import load_images

    group = dist.new_group(backend="gloo", timeout=timedelta(hours=6))
    for my_turn in (distributed.is_main, distributed.local_rank == 0 and not distributed.is_main):
        if my_turn:
            for name, split in ((config.dataset, "train"), (config.val_dataset or config.dataset, "test")):
                load_images(name, split=split, root=config.data_root, download=True, resize=config.resize)
        dist.barrier(group=group)
    dist.destroy_process_group(group)


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class RunState:
    """What the loop keeps between steps (for callers and tests)."""

    step: int = 0
    total_steps: int = 0
    last_terms: dict[str, float] = field(default_factory=dict)
    validation: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False  # --stop_on_gaming ended the run; the weights are those of ``step``
    noise_level: float | None = None  # the level the run trained with (estimated for --noise_level auto)
    out_of_time: bool = False  # --time_limit ended the run before its planned steps


class TimeBudget:
    """Plans how many steps fit a wall-clock budget, so that the learning-rate schedule still decays
    to its end inside it. The first plan comes after a few timed steps; the plan is revised every
    ``replan_every`` steps from the measured time per step, and the time that validations take is
    charged to the budget. The run also stops when the budget is spent, whatever the plan said.

    Budget runs are not bitwise reproducible (the step count depends on the machine's speed); runs
    with ``--max_steps`` are.
    """

    first_plan_after = 4  # steps timed before the first plan (the very first step pays one-time costs)
    replan_every = 25
    reserve_fraction = 0.02  # of the budget, kept for the final validation, weights and figure

    def __init__(self, seconds: float, start_step: int, cap: int | None, started: float) -> None:
        self.seconds, self.deadline = float(seconds), started + float(seconds)
        self.start_step, self.cap = start_step, cap
        self.timed_from: tuple[int, float] | None = None  # (step, time) after the first step of this session
        self.validation_seconds = 0.0
        self.last_validation_seconds = 0.0

    def initial_total(self) -> int:
        return self.cap if self.cap is not None else 1 << 40  # unknown until timed: the schedule is flat until then

    def validated(self, seconds: float) -> None:
        self.validation_seconds += seconds
        self.last_validation_seconds = seconds

    def plan(self, step: int, total: int, val_interval: int, now: float) -> int:
        """The total step count to aim for, as known at ``step``."""
        if self.timed_from is None:
            self.timed_from = (step, now)
            self.validation_seconds = 0.0
        done = step - self.timed_from[0]
        if now >= self.deadline - self.reserve_fraction * self.seconds:
            return step  # out of time: this step is the last
        if done < self.first_plan_after or (done - self.first_plan_after) % self.replan_every:
            return total
        per_step = max(now - self.timed_from[1] - self.validation_seconds, 1e-9) / done
        remaining = self.deadline - now - self.reserve_fraction * self.seconds - self.last_validation_seconds
        validations_per_step = 1.0 / val_interval if val_interval else 0.0
        affordable = step + max(0, int(remaining / (per_step + validations_per_step * self.last_validation_seconds)))
        planned = max(step + 1, affordable)
        return min(planned, self.cap) if self.cap is not None else planned


def prepare_out_dir(out_dir: Path, resume: str | None, overwrite: bool) -> dict[str, Any] | None:
    """Refuse to mix two runs in one folder; return the checkpoint to resume from, if any."""
    existing = out_dir / "config.json"
    if resume:
        location = out_dir if resume in ("auto", str(out_dir)) else Path(resume)
        path = latest_checkpoint(location)
        if path is None:
            raise SeiUserError(f"nothing to resume in {location}: no checkpoint found")
        return load_checkpoint(path)
    if existing.exists() and not overwrite:
        raise SeiUserError(f"{out_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if overwrite and (out_dir / "checkpoints").is_dir():
        for old in (out_dir / "checkpoints").glob("step_*.pt"):
            old.unlink()
    return None


GAMING_GAP = -0.5  # val_sure_gap below this (sigma^2 units): honest networks measured within +-0.1, gamed ones -2 to -8


clock = time.perf_counter  # the loop's clock (tests replace it to make time budgets deterministic)

RESUME_OVERRIDES = ("device", "num_workers", "max_steps", "epochs", "time_limit")  # what a resumed run may change


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
    _, metadata, _ = _load_init(config)
    stored = dict(metadata.get("model") or {})
    name = stored.pop("name", None)
    for key in ("task", "sr_factor"):
        stored.pop(key, None)
    if config.model is not None and config.model != name:
        raise SeiUserError(f"--init {config.init} holds a {name} network, but --model {config.model} was asked; drop --model")
    unknown = {k: v for k, v in config.model_options.items() if stored.get(k) != v}
    if unknown:
        raise SeiUserError(f"--init {config.init} fixes the network's options; drop model_options {sorted(unknown)}")
    return dataclasses.replace(config, model=name, model_options=stored)


def _load_init(config: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    from sei.weights import load_weights_with_physics

    try:
        return load_weights_with_physics(config.init, task=config.task, sr_factor=config.sr_factor if config.task == "sr" else None,
                                         kernel=None)
    except SeiUserError as error:
        raise SeiUserError(f"--init {config.init}: {error}") from error


def _training_data(config: TrainConfig, physics: Any) -> tuple[Any, Any]:
    """The training measurements (with ground truth when simulated) and the held-out validation set."""
    from sei.data import MeasuredImages, MeasurementFolder, load_images

    if config.measurements:
        return MeasurementFolder(config.measurements), None
    images = load_images(config.dataset, split="train", root=config.data_root, download=config.download, resize=config.resize)
    source = MeasuredImages(images, physics, seed=config.seed)
    if not config.val_images:
        return source, None
    held_out = load_images(config.val_dataset or config.dataset, split="test", root=config.data_root, download=config.download, resize=config.resize)
    return source, MeasuredImages(list(held_out)[: config.val_images], physics, seed=config.seed)


def _estimate_poisson_gaussian(config: TrainConfig, source: Any) -> tuple[float, float]:
    """``--noise poisson-gaussian`` with ``auto``: (level, gain) estimated from the training measurements
    (the values given as numbers are kept), printed."""
    from sei.noise_estimation import estimate_poisson_gaussian

    estimate = estimate_poisson_gaussian([y for _, _, y in source])
    print(f"sei: estimated Poisson-Gaussian noise from {len(source)} measurement(s): gain {estimate.gain_level:.3g}, "
          f"noise level {estimate.noise_level:.3g} (8-bit units)", file=sys.stderr, flush=True)
    if config.gain == "auto" and not estimate.gain_level > 0:
        raise SeiUserError("the measurements show no signal-dependent noise (estimated gain 0); use --noise gaussian")
    level = estimate.noise_level if config.noise_level == "auto" else float(config.noise_level)
    gain = estimate.gain_level if config.gain == "auto" else float(config.gain)
    return level, gain


def _estimate_noise(config: TrainConfig, source: Any, physics: Any) -> float:
    """``--noise_level auto``: the level estimated from the training measurements themselves, printed."""
    from sei.noise_estimation import estimate_noise_level

    estimate = estimate_noise_level([y for _, _, y in source], physics=physics)
    print(f"sei: estimated noise level {estimate.level:.3g} (8-bit units) from {len(source)} measurement(s) "
          f"({estimate.method})", file=sys.stderr, flush=True)
    return float(estimate.level)


def train(config: TrainConfig, out_dir: str | Path, resume: str | None = None, overwrite: bool = False, progress: bool = True,
          on_step: Callable[[RunState], None] | None = None, log: str | Sequence[str] = "csv,tensorboard") -> RunState:
    """Train a network as ``config`` says, writing everything under ``out_dir``.

    ``on_step(state)`` is called after every step (progress for a caller such as ``sei app``); an
    exception it raises ends the run there (cancellation), the checkpoints already written staying.

    Outputs: ``config.json``, ``checkpoints/step_*.pt``, ``metrics.csv``, ``validation.csv``,
    ``loss.png`` and the final ``weights.safetensors`` (with metadata and the forward model's tensors);
    ``log`` chooses the run log's backends (:mod:`sei.run_log`: csv, tensorboard, or none).
    On resume the checkpoint's configuration and forward model are used (the kernel travels inside the
    checkpoint); ``config`` contributes only :data:`RESUME_OVERRIDES`.
    """
    from sei.data import PatchDataset
    from sei.losses import build_method
    from sei.models import create_model
    from sei.physics import make_physics
    from sei.physics.state import physics_from_state
    from sei.run_log import validation_panel
    from sei.weights import save_weights

    started = clock()
    out_dir = Path(out_dir)
    distributed = Distributed.from_environment(config.device)
    checkpoint = prepare_out_dir(out_dir, resume, overwrite) if distributed.is_main else None
    if distributed.world_size > 1:  # every rank resumes from rank 0's choice
        box = [checkpoint]
        dist.broadcast_object_list(box, src=0)
        checkpoint = box[0]
    if checkpoint is not None:
        config = resumed_config(checkpoint["config"], config)
        if config.max_steps is not None and config.max_steps < int(checkpoint["step"]):
            raise SeiUserError(f"the run is already at step {checkpoint['step']}; --max_steps {config.max_steps} cannot shorten it")
    elif config.init:
        config = init_model_config(config)
    if config.time_limit is not None and not config.time_limit > 0:
        raise SeiUserError(f"the time limit must be positive, got {config.time_limit} s")
    if config.noise_level == "auto" and not config.measurements:
        raise SeiUserError("--noise_level auto estimates the level of given --measurements; with --dataset the measurements "
                           "are simulated, at a --noise_level you choose")
    poisson = config.noise == "poisson-gaussian"
    if config.gain == "auto" and not config.measurements:
        raise SeiUserError("--gain auto estimates the gain of given --measurements; with --dataset give a number")
    if config.gain is not None and not poisson:
        raise SeiUserError("--gain applies to --noise poisson-gaussian only")
    estimate_pg = poisson and "auto" in (config.noise_level, config.gain)
    config = resolve_config(config)
    device = _device(config, distributed)
    if config.stop_on_gaming and (distributed.world_size > 1 or not config.val_interval):
        raise SeiUserError("--stop_on_gaming needs one process and a --val_interval (it decides at each validation)")
    if config.download and distributed.world_size > 1 and not config.measurements:
        _download_rank_by_rank(config, distributed)

    # --- problem, data, model, method
    nominal_noise = (config.noise_estimate or 5.0) if config.noise_level == "auto" else float(config.noise_level)
    nominal_gain = ((config.gain_estimate or 1.0) if config.gain == "auto" else config.gain) if poisson else None
    if checkpoint is not None and "physics" in checkpoint:  # the kernel itself, not a path that may not resolve here
        physics = physics_from_state(checkpoint["physics"]["metadata"], checkpoint["physics"]["tensors"])
    else:
        physics = make_physics(config.task, kernel=config.kernel, sr_factor=config.sr_factor, noise_level=nominal_noise,
                               noise_model=config.noise, gain=nominal_gain)
    physics = physics.to(device)
    source, validation_source = _training_data(config, physics)
    if len(source) == 0:
        raise SeiUserError("the training set is empty")
    if estimate_pg and checkpoint is None:
        level, gain = _estimate_poisson_gaussian(config, source) if distributed.is_main else (0.0, 0.0)
        if distributed.world_size > 1:
            box = [(level, gain)]
            dist.broadcast_object_list(box, src=0)
            level, gain = box[0]
        config = dataclasses.replace(config, noise_estimate=round(level, 4) if config.noise_level == "auto" else None,
                                     gain_estimate=round(gain, 4) if config.gain == "auto" else None)
        physics = physics_from_state(*_state_of(physics), noise_level=level, gain=gain).to(device)
    elif config.noise_level == "auto" and config.noise_estimate is None:
        level = _estimate_noise(config, source, physics) if distributed.is_main else 0.0
        if distributed.world_size > 1:
            box = [level]
            dist.broadcast_object_list(box, src=0)
            level = box[0]
        config = dataclasses.replace(config, noise_estimate=round(level, 4))
    if config.noise_level == "auto" and checkpoint is None and not estimate_pg:
        physics = physics_from_state(*_state_of(physics), noise_level=config.noise_estimate).to(device)
    patches = PatchDataset(source, patch_size=config.patch_size, seed=config.seed)
    steps_per_epoch = len(source) / config.batch_size

    torch.manual_seed(derive_seed(config.seed, "init"))
    model = create_model(config.model, task=config.task, sr_factor=config.sr_factor, **config.model_options).to(device)
    autocast_dtype = AMP_DTYPES[config.amp]
    # autocast covers the network passes only: physics and loss arithmetic stay in float32
    objective = build_method(
        config.method, physics, alpha=config.alpha, stop_gradient=config.stop_gradient, scale_factors=config.scale_factors,
        autocast_dtype=autocast_dtype, sure_divergence=config.sure_divergence, unsure=config.unsure,
    )
    if isinstance(objective, torch.nn.Module):
        objective.to(device)
    if objective.uses_ground_truth and config.measurements:
        raise SeiUserError(f"method {config.method!r} needs ground truth, which --measurements does not have")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    step = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("objective"):
            objective.load_state_dict(checkpoint["objective"])
        step = int(checkpoint["step"])
    elif config.init:
        initial, _, _ = _load_init(config)
        model.load_state_dict(initial.state_dict())
    network = model
    if config.compile:
        network = torch.compile(network)
    if distributed.world_size > 1:
        # The objective runs the network up to three times before one backward. Autograd sums the
        # three contributions into each parameter's single AccumulateGrad, so DDP's hook fires once
        # per parameter and the defaults (no find_unused_parameters, no static_graph) are right;
        # tests/test_distributed.py runs the three-pass methods under DDP.
        network = torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    if checkpoint is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])

    budget = TimeBudget(config.time_limit, step, config.max_steps, started) if config.time_limit else None
    if budget is not None and config.max_steps is None and config.epochs is not None:
        budget.cap = max(1, math.ceil(config.epochs * steps_per_epoch))
    if budget is not None:
        total_steps = budget.initial_total()
    elif checkpoint is not None and checkpoint["config"].get("time_limit") and config.max_steps is None and "total_steps" in checkpoint:
        total_steps = int(checkpoint["total_steps"])  # a budget run resumed without a new budget: finish its plan
    else:
        total_steps = config.max_steps if config.max_steps is not None else max(1, math.ceil(config.epochs * steps_per_epoch))
    if step >= total_steps and distributed.is_main:
        print(f"sei: the run already reached its {step} steps; pass a larger --max_steps (or a --time_limit) to train more",
              file=sys.stderr, flush=True)
    sampler = StepBatches(len(source), config.batch_size, config.seed, step, total_steps, distributed.rank, distributed.world_size)
    loader = torch.utils.data.DataLoader(
        _KeyedPatches(patches), batch_sampler=sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda", persistent_workers=False
    )
    state = RunState(step=step, total_steps=total_steps, noise_level=float(physics.noise_level))
    writer = _RunWriter(out_dir, config, enabled=distributed.is_main, start_step=step, log=log,
                        start_seconds=float(checkpoint.get("train_seconds", 0.0)) if checkpoint else 0.0)
    rng = torch.Generator(device=device)

    # --- the loop
    bar = None
    if progress and distributed.is_main:
        from sei.runtime import progress_bar

        bar = progress_bar(total=None if budget else total_steps, initial=step, unit="step", desc=f"training {config.method} {config.task}")
    loop_started = clock()
    validation_seconds = -float(checkpoint.get("train_seconds", 0.0)) if checkpoint else 0.0  # excluded from the logged training time
    last_honest: tuple[int, dict[str, torch.Tensor]] | None = None  # --stop_on_gaming: (step, weights) of the last good validation
    for batch in loader:
        if step >= total_steps:  # the budget shortened the plan after the loader fetched this batch
            break
        lr = learning_rate(step, total_steps, config.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_seed = derive_seed(config.seed, "step", step, distributed.rank)
        torch.manual_seed(step_seed)  # dropout / drop-path masks
        rng.manual_seed(step_seed)  # SURE probe, transform draws, re-measurement noise
        y = batch["y"].to(device, non_blocking=True)
        x = batch["x"].to(device, non_blocking=True) if "x" in batch else None
        network.train()
        terms = objective(network, y, physics, x=x, rng=rng)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        state.step = step
        state.last_terms = distributed.mean(terms)
        if config.unsure:  # the level UNSURE has learned so far (8-bit units); the same on every rank
            state.last_terms["noise_level"] = objective.noise_level()
        if not all(math.isfinite(v) for v in state.last_terms.values()):
            raise RuntimeError(f"training diverged at step {step}: {state.last_terms}; try a lower --lr")
        if budget is not None:
            planned = budget.plan(step, total_steps, config.val_interval, clock())
            if distributed.world_size > 1:  # every rank follows rank 0's plan
                box = [planned]
                dist.broadcast_object_list(box, src=0)
                planned = box[0]
            state.out_of_time = planned == step and step < total_steps
            total_steps = sampler.total_steps = state.total_steps = planned
            if bar is not None and total_steps < (1 << 40):
                bar.total = total_steps
        if on_step is not None:
            on_step(state)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{state.last_terms['loss']:.3g}", refresh=False)
        if step % config.log_interval == 0 or step == total_steps:
            writer.log(step, step / steps_per_epoch, lr, clock() - loop_started - validation_seconds, state.last_terms)
        last = step == total_steps
        if (config.val_interval and step % config.val_interval == 0) or last:
            if distributed.is_main:
                validation_started = clock()
                record = validate(model, physics, validation_source, source, objective, device)
                spent = clock() - validation_started
                validation_seconds += spent
                if budget is not None:
                    budget.validated(spent)
                record["step"] = step
                record["train_seconds"] = round(clock() - loop_started - validation_seconds, 3)
                state.validation.append(record)
                writer.log_validation(record, lambda: validation_panel(model, physics, validation_source, source, device))
                gamed = record.get("val_sure_gap", 0.0) < GAMING_GAP
                if gamed:
                    print(
                        f"sei: warning: at step {step} the finite-difference SURE is {-record['val_sure_gap']:.1f} sigma^2 below the exact one: "
                        "the network is gaming the estimator (docs/methods.md, defect 8); use --sure_divergence exact or --stop_on_gaming",
                        file=sys.stderr, flush=True,
                    )
                if config.stop_on_gaming and not gamed:
                    last_honest = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})
                elif config.stop_on_gaming and last_honest is not None:
                    step, weights = last_honest
                    model.load_state_dict(weights)
                    state.step, state.stopped_early = step, True
                    print(f"sei: stopping: keeping the weights of step {step}, the last validation before the gaming", file=sys.stderr, flush=True)
                    break
        if step % config.checkpoint_interval == 0 or last:
            if distributed.is_main:
                writer.checkpoint(step, total_steps, model, optimizer, scaler, objective, physics, config,
                                  clock() - loop_started - validation_seconds)
        if last:
            break
    if bar is not None:
        bar.close()
    if distributed.is_main:
        metadata = {
            "method": objective.name,
            "stop_gradient": config.stop_gradient,
            "steps": step,
            "dataset": config.measurements or config.dataset,
            "seed": config.seed,
            "noise_level_estimated": config.noise_level == "auto",
            **({"noise_level_learned": round(objective.noise_level(), 4)} if config.unsure else {}),
            **({"init": config.init} if config.init else {}),
            "train_seconds": round(clock() - loop_started - validation_seconds, 3),  # wall time, validations excluded
            **({"validation": state.validation[-1]} if state.validation else {}),
        }
        save_weights(model, out_dir / "weights.safetensors", metadata, physics=physics)
        writer.figure()
    writer.close()
    if distributed.world_size > 1:
        dist.barrier()
    if distributed.owns_group:  # NCCL warns at exit about a group left open
        dist.destroy_process_group()
    return state


def _state_of(physics: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from sei.physics.state import physics_state

    return physics_state(physics)


VALIDATION_MEASUREMENTS = 4  # training measurements that the measurement-domain validation scores
VALIDATION_CROP = 256  # their centre crop, in measurement pixels: validation must not cost as much as training


def validation_crops(training: Any, margin: int, circular: bool) -> list[tuple[torch.Tensor, int]]:
    """``(y, margin)`` pairs for the SURE validation: the centre crop of the first few training
    measurements. A whole simulated measurement is circular, so SURE needs no margin there; a crop,
    or a user's measurement (the scene continues past its frame), gets the operator's border margin."""
    crops = []
    for index in range(min(len(training), VALIDATION_MEASUREMENTS)):
        _, _, y = training[index]
        height, width = y.shape[-2:]
        top, left = max(0, (height - VALIDATION_CROP) // 2), max(0, (width - VALIDATION_CROP) // 2)
        crop = y[..., top : top + VALIDATION_CROP, left : left + VALIDATION_CROP]
        whole = crop.shape[-2:] == y.shape[-2:]
        crops.append((crop, 0 if whole and circular else margin))
    return crops


@torch.no_grad()
def validate(model: torch.nn.Module, physics: Any, held_out: Any, training: Any, objective: Any, device: torch.device) -> dict[str, float]:
    """Validation PSNR on held-out images; with no ground truth anywhere, the SURE estimate of the
    measurement-domain error on (centre crops of) training measurements (exact divergence: an unbiased
    proxy, see docs/methods.md). A method trained with the finite-difference divergence also gets
    ``val_sure_gap``: finite-difference minus exact SURE on the same measurements and probes, in
    units of sigma^2; about 0 for an honest network, strongly negative once it games the estimator."""
    from sei.data import MeasuredImages
    from sei.evaluation import image_metrics
    from sei.losses import SureLoss, build_method

    model.eval()
    record: dict[str, float] = {}
    if held_out is not None and len(held_out):
        metrics = []
        for index in range(len(held_out)):
            _, x, y = held_out[index]
            estimate = model(y[None].to(device))[0].float().cpu()
            metrics.append(image_metrics(estimate, x))
        record["val_psnr"] = sum(m[0] for m in metrics) / len(metrics)
        record["val_ssim"] = sum(m[1] for m in metrics) / len(metrics)
    losses = getattr(objective, "losses", {})  # an Objective; anything else is validated without the gap
    finite_difference = any(isinstance(loss, SureLoss) and loss.divergence == "finite-difference" for loss in losses.values())
    divergences = ["exact"] if finite_difference or "val_psnr" not in record else []
    if finite_difference:
        divergences.append("finite-difference")
    crops = validation_crops(training, physics.margin, circular=isinstance(training, MeasuredImages)) if divergences else []
    estimates: dict[str, float] = {}
    for divergence in divergences:
        generator = torch.Generator(device=device).manual_seed(0)  # the same probes for both estimators
        values = []
        for y, margin in crops:
            sure = build_method("sure", physics, margin=margin, autocast_dtype=None, sure_divergence=divergence)
            with torch.enable_grad():
                values.append(float(sure(model, y[None].to(device), physics, rng=generator)["loss"].detach()))
        estimates[divergence] = sum(values) / len(values)
    if "val_psnr" not in record:
        record["val_sure"] = estimates["exact"]
    if finite_difference:
        # in units of the noise variance (for Poisson-Gaussian noise, its mean over the crops: gain * y + sigma^2)
        scale = physics.sigma**2 + (getattr(physics, "gain", 0.0) * sum(float(y.mean()) for y, _ in crops) / max(len(crops), 1))
        record["val_sure_gap"] = (estimates["finite-difference"] - estimates["exact"]) / scale
    model.train()
    return record


class _RunWriter:
    """Rank 0's files: config.json, the run log (:mod:`sei.run_log`: metrics.csv, validation.csv,
    TensorBoard events), checkpoints, loss.png."""

    def __init__(self, out_dir: Path, config: TrainConfig, enabled: bool, start_step: int,
                 log: str | Sequence[str] = "csv,tensorboard", start_seconds: float = 0.0) -> None:
        from sei.run_log import open_run_log

        self.out_dir, self.enabled = out_dir, enabled
        self.keep = config.keep_checkpoints
        self.last = (start_step, start_seconds)  # (step, training seconds) of the previous row: seconds per step
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        self.run_log = open_run_log(out_dir, log, enabled=enabled, start_step=start_step)

    def log(self, step: int, epoch: float, lr: float, seconds: float, terms: dict[str, float]) -> None:
        per_step = (seconds - self.last[1]) / max(step - self.last[0], 1)
        self.last = (step, seconds)
        self.run_log.scalars(step, "train", {"epoch": round(epoch, 4), "lr": lr, "seconds": round(seconds, 3),
                                             "step_seconds": round(per_step, 4), **terms})

    def log_validation(self, record: dict[str, float], panel: Any = None) -> None:
        """The validation numbers and, for backends that show images, ``panel()`` (computed only then)."""
        self.run_log.scalars(record["step"], "validation", {k: v for k, v in record.items() if k != "step"})
        if panel is not None and self.run_log.wants_images:
            self.run_log.image(record["step"], "validation/panel", panel())
        self.run_log.flush()

    def close(self) -> None:
        self.run_log.close()

    def checkpoint(
        self, step: int, total_steps: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, objective: torch.nn.Module,
        physics: Any, config: TrainConfig, seconds: float,
    ) -> None:
        """Everything a resumed run needs, including the forward model itself (the kernel tensor, so the
        run resumes from any folder) and the objective's state (e.g. a learned noise level)."""
        from sei.physics.state import physics_state

        metadata, tensors = physics_state(physics)
        state = {
            "train_seconds": seconds,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "objective": objective.state_dict() if isinstance(objective, torch.nn.Module) else {},
            "physics": {"metadata": metadata, "tensors": tensors},
            "step": step,
            "total_steps": total_steps,
            "config": config.to_dict(),
        }
        atomic_write(checkpoint_path(self.out_dir, step), lambda handle: torch.save(state, handle))
        self.run_log.flush()  # what a crash after this checkpoint would lose is only what a resume redoes
        for old in sorted((self.out_dir / "checkpoints").glob("step_*.pt"))[: -self.keep]:
            old.unlink()

    def figure(self) -> None:
        """Loss curve (and validation) as ``loss.png``."""
        path = self.out_dir / "metrics.csv"
        if not path.exists():
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open(path) as handle:
            rows = list(csv.DictReader(handle))
        from sei.run_log import BOOKKEEPING

        terms = [k for k in rows[0] if k not in BOOKKEEPING]
        steps = [int(r["step"]) for r in rows]
        has_validation = (self.out_dir / "validation.csv").exists()
        figure, axes = plt.subplots(1, 2 if has_validation else 1, figsize=(11 if has_validation else 6, 4), squeeze=False)
        for term in terms:
            axes[0, 0].plot(steps, [float(r[term]) for r in rows], label=term)
        axes[0, 0].set(xlabel="step", ylabel="loss", yscale="symlog", title="training loss terms")
        axes[0, 0].legend()
        if has_validation:
            with open(self.out_dir / "validation.csv") as handle:
                validation = list(csv.DictReader(handle))
            key = "val_psnr" if "val_psnr" in validation[0] else "val_sure"
            axes[0, 1].plot([int(r["step"]) for r in validation], [float(r[key]) for r in validation], marker="o")
            axes[0, 1].set(xlabel="step", ylabel=key, title="validation")
        figure.tight_layout()
        figure.savefig(self.out_dir / "loss.png", dpi=90)
        plt.close(figure)

"""The problem a run trains on: the forward model, the training measurements (with ground truth when
simulated), the held-out validation images, and the noise estimated from given measurements."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

import torch

from sei.errors import SeiUserError
from sei.training.config import TrainConfig
from sei.training.distributed import Distributed

if TYPE_CHECKING:
    from sei.physics import Operator


def training_data(config: TrainConfig, physics: Operator) -> tuple[Any, Any]:
    """The training measurements (with ground truth when simulated) and the held-out validation set."""
    from sei.data import MeasuredImages, MeasurementFolder, load_images

    if config.measurements:
        return MeasurementFolder(config.measurements), None
    images = load_images(
        config.dataset, split="train", root=config.data_root, download=config.download, resize=config.resize
    )
    source = MeasuredImages(images, physics, seed=config.seed)
    if not config.val_images:
        return source, None
    held_out = load_images(
        config.val_dataset or config.dataset,
        split="test",
        root=config.data_root,
        download=config.download,
        resize=config.resize,
    )
    return source, MeasuredImages(list(held_out)[: config.val_images], physics, seed=config.seed)


def _estimate_poisson_gaussian(config: TrainConfig, source: Any) -> tuple[float, float]:
    """``--noise poisson-gaussian`` with ``auto``: (level, gain) estimated from the training measurements
    (the values given as numbers are kept, and so are estimates already in the configuration: ``sei restore``
    estimates before it trains), printed."""
    from sei.noise_estimation import resolve_poisson_gaussian

    level = config.noise_estimate if config.noise_level == "auto" else config.noise_level
    gain = config.gain_estimate if config.gain == "auto" else config.gain
    if level is not None and gain is not None:
        return float(level), float(gain)
    level, gain, estimate = resolve_poisson_gaussian(
        [y for _, _, y in source], config.noise_level, config.gain
    )
    print(
        f"sei: estimated Poisson-Gaussian noise from {len(source)} measurement(s): gain "
        f"{estimate.gain_level:.3g}, "
        f"noise level {estimate.noise_level:.3g} (8-bit units)",
        file=sys.stderr,
        flush=True,
    )
    return level, gain


def _estimate_noise(config: TrainConfig, source: Any, physics: Operator) -> float:
    """``--noise_level auto``: the level estimated from the training measurements themselves, printed."""
    from sei.noise_estimation import estimate_noise_level

    estimate = estimate_noise_level([y for _, _, y in source], physics=physics)
    print(
        f"sei: estimated noise level {estimate.level:.3g} (8-bit units) from {len(source)} measurement(s) "
        f"({estimate.method})",
        file=sys.stderr,
        flush=True,
    )
    return float(estimate.level)


def training_problem(
    config: TrainConfig, checkpoint: dict[str, Any] | None, distributed: Distributed, device: torch.device
) -> tuple[TrainConfig, Operator, Any, Any]:
    """``(config, physics, training measurements, held-out set)``. A resumed run takes the forward model
    from its checkpoint; ``--noise_level auto`` (and ``--gain auto``) are estimated by rank 0 from the
    measurements, written into the returned configuration, and given to every rank."""
    from sei.physics import make_physics
    from sei.physics.state import physics_from_state, physics_state
    from sei.problem import DEFAULT_NOISE_LEVEL, POISSON_GAUSSIAN

    poisson = config.noise == POISSON_GAUSSIAN
    estimate_pg = poisson and "auto" in (config.noise_level, config.gain)
    nominal_noise = (
        (config.noise_estimate or DEFAULT_NOISE_LEVEL)
        if config.noise_level == "auto"
        else float(config.noise_level)
    )
    nominal_gain = (
        ((config.gain_estimate or 1.0) if config.gain == "auto" else config.gain) if poisson else None
    )
    if (
        checkpoint is not None and "physics" in checkpoint
    ):  # the kernel itself, not a path that may not resolve here
        physics = physics_from_state(checkpoint["physics"]["metadata"], checkpoint["physics"]["tensors"])
    else:
        physics = make_physics(
            config.task,
            kernel=config.kernel,
            sr_factor=config.sr_factor,
            noise_level=nominal_noise,
            noise_model=config.noise,
            gain=nominal_gain,
        )
    physics = physics.to(device)
    source, validation_source = training_data(config, physics)
    if len(source) == 0:
        raise SeiUserError("the training set is empty")
    if estimate_pg and checkpoint is None:
        level, gain = distributed.broadcast(
            _estimate_poisson_gaussian(config, source) if distributed.is_main else (0.0, 0.0)
        )
        config = dataclasses.replace(
            config,
            noise_estimate=round(level, 4) if config.noise_level == "auto" else None,
            gain_estimate=round(gain, 4) if config.gain == "auto" else None,
        )
        physics = physics_from_state(*physics_state(physics), noise_level=level, gain=gain).to(device)
    elif config.noise_level == "auto" and config.noise_estimate is None:
        level = distributed.broadcast(
            _estimate_noise(config, source, physics) if distributed.is_main else 0.0
        )
        config = dataclasses.replace(config, noise_estimate=round(level, 4))
    if config.noise_level == "auto" and checkpoint is None and not estimate_pg:
        physics = physics_from_state(*physics_state(physics), noise_level=config.noise_estimate).to(device)
    if poisson and config.measurements and checkpoint is None:
        from sei.physics.noise import check_measurements_nonnegative

        check_measurements_nonnegative([y for _, _, y in source], float(physics.noise_level))
    return config, physics, source, validation_source

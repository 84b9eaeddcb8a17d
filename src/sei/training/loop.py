"""The training loop: set-up in a few named steps, then one loop that can be read top to bottom.

Everything random in a step is a pure function of ``(seed, step, rank)``: the patches a step sees
(a stream of per-epoch permutations cut into batches), their crops, the SURE probe, the transform
draws, the re-measurement noise and dropout masks. A checkpoint therefore only needs the model,
the optimizer and the step, and a resumed run ends with the same weights as an uninterrupted one,
even on a different number of processes (the global batch is the same stream, split by rank).

Launched by ``torchrun``, the same loop trains with DistributedDataParallel: each rank takes a
disjoint slice of every global batch, and rank 0 alone writes files.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sei.errors import SeiUserError
from sei.runtime import AMP_DTYPES, derive_seed
from sei.training.batches import KeyedPatches, StepBatches
from sei.training.budget import TrainingClock, learning_rate, plan_steps
from sei.training.checkpoint import Learner, prepare_out_dir
from sei.training.config import ResolvedConfig, TrainConfig, load_init, run_config
from sei.training.distributed import Distributed, download_rank_by_rank, training_device
from sei.training.problem import training_problem
from sei.training.validation import ValidationMonitor
from sei.training.writer import RunWriter

if TYPE_CHECKING:
    from sei.physics import Operator

clock = time.perf_counter  # the loop's clock (tests replace it to make time budgets deterministic)


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


def _learner(
    config: TrainConfig,
    checkpoint: dict[str, Any] | None,
    physics: Operator,
    device: torch.device,
    distributed: Distributed,
) -> tuple[Learner, torch.nn.Module, int]:
    """``(learner, network, step)``: the network, the method's objective, the optimizer and the gradient
    scaler, their state restored from the checkpoint (or the network's from the weights of ``--init``);
    ``network`` is what the objective calls (the learner's model, compiled and/or DDP-wrapped)."""
    from sei.losses import build_method
    from sei.models import create_model

    torch.manual_seed(derive_seed(config.seed, "init"))
    model = create_model(
        config.model, task=config.task, sr_factor=config.sr_factor, **config.model_options
    ).to(device)
    # autocast covers the network passes only: physics and loss arithmetic stay in float32
    objective = build_method(
        config.method,
        physics,
        alpha=config.alpha,
        stop_gradient=config.stop_gradient,
        scale_factors=config.scale_factors,
        scale_antialias=config.scale_antialias,
        scale_interpolation=config.scale_interpolation,
        autocast_dtype=AMP_DTYPES[config.amp],
        sure_divergence=config.sure_divergence,
        unsure=config.unsure,
    )
    if isinstance(objective, torch.nn.Module):
        objective.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    learner = Learner(model, optimizer, scaler, objective)
    step = 0
    if checkpoint is not None:
        learner.load_state_dict(checkpoint)
        step = int(checkpoint["step"])
    elif config.init:
        initial, _, _ = load_init(config)
        model.load_state_dict(initial.state_dict())
    network = model
    if config.compile:
        network = torch.compile(network)
    if distributed.world_size > 1:
        # The objective runs the network up to three times before one backward. Autograd sums the
        # three contributions into each parameter's single AccumulateGrad, so DDP's hook fires once
        # per parameter and the defaults (no find_unused_parameters, no static_graph) are right;
        # tests/test_distributed.py runs the three-pass methods under DDP.
        network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    return learner, network, step


def _loader(
    patches: Any,
    config: TrainConfig,
    step: int,
    total_steps: int,
    distributed: Distributed,
    device: torch.device,
) -> tuple[StepBatches, torch.utils.data.DataLoader]:
    """This rank's batches of random patches (a :class:`sei.data.PatchDataset`), from ``step`` on."""
    sampler = StepBatches(
        len(patches.measured),
        config.batch_size,
        config.seed,
        step,
        total_steps,
        distributed.rank,
        distributed.world_size,
    )
    loader = torch.utils.data.DataLoader(
        KeyedPatches(patches),
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    return sampler, loader


def _weights_metadata(config: TrainConfig, objective: Any, state: RunState, seconds: float) -> dict[str, Any]:
    return {
        "method": objective.name,
        "stop_gradient": config.stop_gradient,
        "steps": state.step,
        "dataset": config.measurements or config.dataset,
        "seed": config.seed,
        "noise_level_estimated": config.noise_level == "auto",
        **({"noise_level_learned": round(objective.noise_level(), 4)} if config.unsure else {}),
        **({"init": config.init} if config.init else {}),
        "train_seconds": round(seconds, 3),  # wall time, validations excluded
        **({"validation": state.validation[-1]} if state.validation else {}),
    }


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[RunState], None] | None = None,
    log: str | Sequence[str] = "csv,tensorboard",
) -> RunState:
    """Train a network as ``config`` says, writing everything under ``out_dir``.

    ``on_step(state)`` is called after every step (progress for a caller such as ``sei app``); an
    exception it raises ends the run there (cancellation), the checkpoints already written staying.

    Outputs: ``config.json``, ``checkpoints/step_*.pt``, ``metrics.csv``, ``validation.csv``,
    ``loss.png`` and the final ``weights.safetensors`` (with metadata and the forward model's tensors);
    ``log`` chooses the run log's backends (:mod:`sei.run_log`: csv, tensorboard, or none).
    ``config`` is consumed as it is when it is a :class:`~sei.training.config.ResolvedConfig` (``sei
    train`` and ``sei restore`` resolve it once with :func:`~sei.training.config.run_config`); a plain
    :class:`TrainConfig` is resolved here by that same function. On resume the checkpoint's configuration
    and forward model are used (the kernel travels inside the checkpoint); a plain ``config`` then
    contributes only :data:`~sei.training.config.RESUME_OVERRIDES`.
    """
    from sei.data import PatchDataset
    from sei.weights import save_weights

    # --- set-up: configuration, processes, problem, network and method, plan
    started = clock()
    out_dir = Path(out_dir)
    distributed = Distributed.from_environment(config.device)
    # every rank resumes from rank 0's choice
    checkpoint = distributed.broadcast(
        prepare_out_dir(out_dir, resume, overwrite) if distributed.is_main else None
    )
    if not isinstance(config, ResolvedConfig):  # a library call: resolved here (the CLI resolved it already)
        config = run_config(config, checkpoint)
    device = training_device(config, distributed)
    if config.stop_on_gaming and (distributed.world_size > 1 or not config.val_interval):
        raise SeiUserError(
            "--stop_on_gaming needs one process and a --val_interval (it decides at each validation)"
        )
    if config.download and distributed.world_size > 1 and not config.measurements:
        download_rank_by_rank(config, distributed)
    config, physics, source, held_out = training_problem(config, checkpoint, distributed, device)
    patches = PatchDataset(source, patch_size=config.patch_size, seed=config.seed)
    steps_per_epoch = len(source) / config.batch_size
    learner, network, step = _learner(config, checkpoint, physics, device, distributed)
    model, objective, optimizer, scaler = learner.model, learner.objective, learner.optimizer, learner.scaler
    budget, total_steps = plan_steps(config, checkpoint, step, started, steps_per_epoch)
    if step >= total_steps and distributed.is_main:
        print(
            f"sei: the run already reached its {step} steps; pass a larger --max_steps (or a --time_limit) "
            "to train more",
            file=sys.stderr,
            flush=True,
        )
    sampler, loader = _loader(patches, config, step, total_steps, distributed, device)
    state = RunState(step=step, total_steps=total_steps, noise_level=float(physics.noise_level))
    resumed_seconds = float(checkpoint.get("train_seconds", 0.0)) if checkpoint else 0.0
    writer = RunWriter(
        out_dir,
        config,
        physics,
        enabled=distributed.is_main,
        start_step=step,
        log=log,
        start_seconds=resumed_seconds,
    )
    monitor = ValidationMonitor(
        physics, held_out, source, objective, device, config.val_interval, config.stop_on_gaming
    )
    rng = torch.Generator(device=device)
    bar = None
    if progress and distributed.is_main:
        from sei.runtime import progress_bar

        bar = progress_bar(
            total=None if budget else total_steps,
            initial=step,
            unit="step",
            desc=f"training {config.method} {config.task}",
        )

    # --- the loop
    timer = TrainingClock(
        clock(), resumed_seconds
    )  # training seconds: validations excluded, a resumed run's included
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
        if budget is not None:  # every rank follows rank 0's plan
            planned = distributed.broadcast(budget.plan(step, total_steps, config.val_interval, clock()))
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
            writer.log(step, step / steps_per_epoch, lr, timer.seconds(clock()), state.last_terms)
        last = step == total_steps
        if distributed.is_main and monitor.due(step, last):
            validation_started = clock()
            record = monitor.validate(model)
            spent = clock() - validation_started
            timer.exclude(spent)
            if budget is not None:
                budget.validated(spent)
            record["step"] = step
            record["train_seconds"] = round(timer.seconds(clock()), 3)
            state.validation.append(record)
            writer.log_validation(record, lambda: monitor.panel(model))
            if monitor.on_validation(
                step, record, model
            ):  # the weights are back at an earlier step: the run ends there
                step = state.step = monitor.kept_step
                state.stopped_early = True
                break
        if (step % config.checkpoint_interval == 0 or last) and distributed.is_main:
            writer.checkpoint(step, total_steps, learner, timer.seconds(clock()))
        if last:
            break
    if bar is not None:
        bar.close()

    # --- the final weights
    if distributed.is_main:
        save_weights(
            model,
            out_dir / "weights.safetensors",
            _weights_metadata(config, objective, state, timer.seconds(clock())),
            physics=physics,
        )
        writer.figure()
    writer.close()
    if distributed.world_size > 1:
        torch.distributed.barrier()
    if distributed.owns_group:  # NCCL warns at exit about a group left open
        torch.distributed.destroy_process_group()
    return state

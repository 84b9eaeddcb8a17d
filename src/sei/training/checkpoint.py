"""Checkpoints: atomic writes, tensors and primitives only (loadable with ``weights_only=True``).

A checkpoint holds everything a resumed run needs: the model, the optimizer, the gradient scaler, the
objective's state, the forward model itself and the step; every random draw of a step is a function of
``(seed, step, rank)``, so nothing else is needed for a bitwise-exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sei.errors import SeiUserError
from sei.runtime import atomic_write
from sei.training.config import TrainConfig

if TYPE_CHECKING:
    from sei.physics import Operator


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
        raise SeiUserError(
            f"{out_dir} already holds a run; pass --resume to continue it or --overwrite to replace it"
        )
    if overwrite and (out_dir / "checkpoints").is_dir():
        for old in (out_dir / "checkpoints").glob("step_*.pt"):
            old.unlink()
    return None


@dataclass
class Learner:
    """What the training steps change, so what a checkpoint saves and a resume restores: the network, the
    optimizer, the gradient scaler and the objective (its state, e.g. a learned noise level)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    objective: Any

    def state_dict(self) -> dict[str, Any]:
        objective = self.objective.state_dict() if isinstance(self.objective, torch.nn.Module) else {}
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "objective": objective,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore from a checkpoint (one written before the scaler or the objective had state, too)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("objective"):
            self.objective.load_state_dict(checkpoint["objective"])
        if "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler"])


def write_checkpoint(
    out_dir: Path,
    step: int,
    total_steps: int,
    learner: Learner,
    physics: Operator,
    config: TrainConfig,
    seconds: float,
) -> None:
    """Everything a resumed run needs, including the forward model itself (the kernel tensor, so the
    run resumes from any folder) and the objective's state (e.g. a learned noise level)."""
    from sei.physics.state import physics_state

    metadata, tensors = physics_state(physics)
    state = {
        "train_seconds": seconds,
        **learner.state_dict(),
        "physics": {"metadata": metadata, "tensors": tensors},
        "step": step,
        "total_steps": total_steps,
        "config": config.to_dict(),
    }
    atomic_write(checkpoint_path(out_dir, step), lambda handle: torch.save(state, handle))


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent checkpoints of a run folder."""
    for old in sorted((out_dir / "checkpoints").glob("step_*.pt"))[:-keep]:
        old.unlink()

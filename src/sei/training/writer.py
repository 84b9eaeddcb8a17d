"""Rank 0's files of a training run: ``config.json``, the run log (:mod:`sei.run_log`), checkpoints
(:mod:`sei.training.checkpoint`) and the loss figure."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sei.training.checkpoint import Learner, prune_checkpoints, write_checkpoint
from sei.training.config import TrainConfig

if TYPE_CHECKING:
    from sei.physics import Operator


class RunWriter:
    """Rank 0's files: config.json, the run log (:mod:`sei.run_log`: metrics.csv, validation.csv,
    TensorBoard events), checkpoints (of the run's ``config`` and operator ``physics``), loss.png."""

    def __init__(
        self,
        out_dir: Path,
        config: TrainConfig,
        physics: Operator,
        enabled: bool,
        start_step: int,
        log: str | Sequence[str] = "csv,tensorboard",
        start_seconds: float = 0.0,
    ) -> None:
        from sei.run_log import open_run_log

        self.out_dir, self.enabled = out_dir, enabled
        self.config, self.physics = config, physics  # a checkpoint holds both
        self.keep = config.keep_checkpoints
        self.last = (
            start_step,
            start_seconds,
        )  # (step, training seconds) of the previous row: seconds per step
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        self.run_log = open_run_log(out_dir, log, enabled=enabled, start_step=start_step)

    def log(self, step: int, epoch: float, lr: float, seconds: float, terms: dict[str, float]) -> None:
        per_step = (seconds - self.last[1]) / max(step - self.last[0], 1)
        self.last = (step, seconds)
        self.run_log.scalars(
            step,
            "train",
            {
                "epoch": round(epoch, 4),
                "lr": lr,
                "seconds": round(seconds, 3),
                "step_seconds": round(per_step, 4),
                **terms,
            },
        )

    def log_validation(self, record: dict[str, float], panel: Any = None) -> None:
        """The validation numbers and, for backends that show images, ``panel()`` (computed only then)."""
        self.run_log.scalars(record["step"], "validation", {k: v for k, v in record.items() if k != "step"})
        if panel is not None and self.run_log.wants_images:
            self.run_log.image(record["step"], "validation/panel", panel())
        self.run_log.flush()

    def close(self) -> None:
        self.run_log.close()

    def checkpoint(self, step: int, total_steps: int, learner: Learner, seconds: float) -> None:
        """A checkpoint (:func:`sei.training.checkpoint.write_checkpoint`), then the run log flushed: what
        a crash after this checkpoint would lose is only what a resume redoes."""
        write_checkpoint(self.out_dir, step, total_steps, learner, self.physics, self.config, seconds)
        self.run_log.flush()
        prune_checkpoints(self.out_dir, self.keep)

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
        figure, axes = plt.subplots(
            1, 2 if has_validation else 1, figsize=(11 if has_validation else 6, 4), squeeze=False
        )
        for term in terms:
            axes[0, 0].plot(steps, [float(r[term]) for r in rows], label=term)
        axes[0, 0].set(xlabel="step", ylabel="loss", yscale="symlog", title="training loss terms")
        axes[0, 0].legend()
        if has_validation:
            with open(self.out_dir / "validation.csv") as handle:
                validation = list(csv.DictReader(handle))
            key = "val_psnr" if "val_psnr" in validation[0] else "val_sure"
            axes[0, 1].plot(
                [int(r["step"]) for r in validation], [float(r[key]) for r in validation], marker="o"
            )
            axes[0, 1].set(xlabel="step", ylabel=key, title="validation")
        figure.tight_layout()
        figure.savefig(self.out_dir / "loss.png", dpi=90)
        plt.close(figure)

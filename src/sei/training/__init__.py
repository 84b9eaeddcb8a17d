"""Training: one config dataclass, one loop that can be read top to bottom, exact resume.

- :mod:`sei.training.config`: :class:`TrainConfig`, the presets, resumed and ``--init`` configurations,
  resolved once at the boundary by :func:`run_config` into the :class:`ResolvedConfig` the loop consumes;
- :mod:`sei.training.loop`: :func:`train`, the loop (and its set-up in a few named steps);
- :mod:`sei.training.checkpoint`: checkpoints written atomically, found and loaded again;
- :mod:`sei.training.budget`: the learning-rate schedule and the ``--time_limit`` step plan;
- :mod:`sei.training.validation`: :func:`validate` and the monitor whose hook holds the SURE-gaming check;
- :mod:`sei.training.batches`, :mod:`sei.training.distributed`, :mod:`sei.training.problem`,
  :mod:`sei.training.writer`: the order of the data, several processes, the problem trained on, rank 0's
  files.
"""

from sei.runtime import derive_seed
from sei.training.batches import StepBatches
from sei.training.budget import TimeBudget, learning_rate
from sei.training.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prepare_out_dir
from sei.training.config import (
    PRESETS,
    RESUME_OVERRIDES,
    ResolvedConfig,
    TrainConfig,
    init_model_config,
    resolve_config,
    resumed_config,
    run_config,
)
from sei.training.loop import RunState, train
from sei.training.validation import GAMING_GAP, validate

__all__ = [
    "GAMING_GAP",
    "PRESETS",
    "RESUME_OVERRIDES",
    "ResolvedConfig",
    "RunState",
    "StepBatches",
    "TimeBudget",
    "TrainConfig",
    "checkpoint_path",
    "derive_seed",
    "init_model_config",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "prepare_out_dir",
    "resolve_config",
    "resumed_config",
    "run_config",
    "train",
    "validate",
]

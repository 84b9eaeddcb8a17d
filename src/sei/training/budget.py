"""How long a run trains: the learning-rate schedule, the step count planned to fit a wall-clock budget,
and the training seconds (validations excluded, a resumed run's earlier seconds included)."""

from __future__ import annotations

import math
from typing import Any

from sei.training.config import TrainConfig


def learning_rate(step: int, total_steps: int, base_lr: float) -> float:
    """The paper's schedule: constant for the first half, then linear decay to 1% of the start.

    >>> [round(learning_rate(s, 100, 1.0), 3) for s in (0, 49, 50, 75, 100)]
    [1.0, 1.0, 1.0, 0.505, 0.01]
    """
    half = total_steps / 2
    if step < half:
        return base_lr
    return base_lr * (1 - 0.99 * min(1.0, (step - half) / max(half, 1)))


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
        return (
            self.cap if self.cap is not None else 1 << 40
        )  # unknown until timed: the schedule is flat until then

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
        affordable = step + max(
            0, int(remaining / (per_step + validations_per_step * self.last_validation_seconds))
        )
        planned = max(step + 1, affordable)
        return min(planned, self.cap) if self.cap is not None else planned


class TrainingClock:
    """Training seconds: wall time since the loop started, validations excluded, plus the seconds a
    resumed run had already trained (counted as negative excluded time)."""

    def __init__(self, started: float, resumed_seconds: float = 0.0) -> None:
        self.started = started
        self.excluded = -resumed_seconds

    def exclude(self, seconds: float) -> None:
        self.excluded += seconds

    def seconds(self, now: float) -> float:
        return now - self.started - self.excluded


def plan_steps(
    config: TrainConfig, checkpoint: dict[str, Any] | None, step: int, started: float, steps_per_epoch: float
) -> tuple[TimeBudget | None, int]:
    """The time budget (``--time_limit``; ``None`` without one) and the total step count planned now."""
    budget = TimeBudget(config.time_limit, step, config.max_steps, started) if config.time_limit else None
    if budget is not None and config.max_steps is None and config.epochs is not None:
        budget.cap = max(1, math.ceil(config.epochs * steps_per_epoch))
    if budget is not None:
        return budget, budget.initial_total()
    if (
        checkpoint is not None
        and checkpoint["config"].get("time_limit")
        and config.max_steps is None
        and "total_steps" in checkpoint
    ):
        return None, int(
            checkpoint["total_steps"]
        )  # a budget run resumed without a new budget: finish its plan
    return None, config.max_steps if config.max_steps is not None else max(
        1, math.ceil(config.epochs * steps_per_epoch)
    )

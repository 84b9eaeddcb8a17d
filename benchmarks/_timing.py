"""Shared timing helpers for the benchmarks: interleaved repeats, medians; ``sei`` commands run and timed."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(
    functions: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median wall time of each function, interleaving them so machine noise hits all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def run_sei(args: list[str], log: Path, cwd: Path | None, threads: int = 1) -> tuple[int, float]:
    """Run ``python -m sei ARGS`` with ``threads`` threads, output appended to ``log``; (exit code, wall
    seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"$ sei {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run(
            [sys.executable, "-m", "sei", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
            cwd=cwd,
        )
    return done.returncode, time.perf_counter() - started

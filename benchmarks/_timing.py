"""Shared timing helper for the benchmarks: interleaved repeats, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
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

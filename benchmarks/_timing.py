"""Wall-clock timing shared by the benchmark scripts (imported as ``_timing`` when a
script runs as ``python benchmarks/NAME.py``; ``make bench`` skips ``_*.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def call_times(fn: Callable, *args, reps: int, warmup: bool = True) -> list[float]:
    """Seconds of each of ``reps`` calls ``fn(*args)``, blocking on the outputs; one
    untimed call first when ``warmup`` (compilation, first-touch allocation)."""
    if warmup:
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return times


def median_seconds(fn: Callable, *args, reps: int, warmup: bool = True) -> float:
    """Median of :func:`call_times`."""
    return statistics.median(call_times(fn, *args, reps=reps, warmup=warmup))

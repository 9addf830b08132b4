"""Wall-clock timing of one compiled candidate.

A :data:`Timer` is ``timer(run, block_sizes) -> seconds``, with ``run()`` launching the jitted,
already compiled kernel call once; searches take one as an argument so that tests can inject a
deterministic one (e.g. a table by block size) and a search's choice can be asserted.

See docs/autotune.md#what-is-searched.
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

Timer = Callable[[Callable[[], Any], Any], float]


def median_seconds(run: Callable[[], Any], *, repeats: int, warmup: int) -> float:
    """Median of ``repeats`` timed calls of ``run()``, each waited for with ``jax.block_until_ready``
    (dispatch is asynchronous), after ``warmup`` untimed ones (caches, clocks, autotuners of XLA)."""
    if repeats < 1:
        raise ValueError(f"median_seconds: `repeats` must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def wall_clock_timer(repeats: int = 10, warmup: int = 2) -> Timer:
    """The default :data:`Timer`: :func:`median_seconds` of the call (the block sizes are not needed)."""
    return lambda run, block_sizes: median_seconds(run, repeats=repeats, warmup=warmup)

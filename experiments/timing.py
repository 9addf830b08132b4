"""Wall-clock timing of a JAX function, as the benchmarks measure it."""

import time

import jax
import numpy as np


def median_seconds(fn, *args, repeats: int) -> float:
    """Median over ``repeats`` calls of ``fn(*args)``, each waited for with ``jax.block_until_ready``
    (JAX dispatches asynchronously), after one untimed call that compiles and warms up."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))

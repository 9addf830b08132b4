"""Wall-clock timing of a JAX function, as the benchmarks and the autotuner measure it."""

import statistics
import time

import jax


def median_seconds(fn, *args, repeats: int, warmup: int = 1) -> float:
    """Median over ``repeats`` calls of ``fn(*args)``, each waited for with ``jax.block_until_ready``
    (JAX dispatches asynchronously), after ``warmup`` untimed calls (compilation, caches, clocks).

    Example::

        seconds = median_seconds(jax.jit(jnp.cumsum), jnp.ones(1 << 20), repeats=10)
    """
    if repeats < 1:
        raise ValueError(f"median_seconds: `repeats` must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)

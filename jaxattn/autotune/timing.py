"""Wall-clock timing of one compiled candidate.

A :data:`Timer` is ``timer(run, block_sizes) -> seconds``, with ``run()`` launching the jitted,
already compiled kernel call once; searches take one as an argument so that tests can inject a
deterministic one (e.g. a table by block size) and a search's choice can be asserted.

See docs/autotune.md#what-is-searched.
"""

from collections.abc import Callable
from typing import Any

from jaxattn.timing import median_seconds

Timer = Callable[[Callable[[], Any], Any], float]


def wall_clock_timer(repeats: int = 10, warmup: int = 2) -> Timer:
    """The default :data:`Timer`: :func:`jaxattn.timing.median_seconds` of the call (the block sizes
    are not needed)."""
    return lambda run, block_sizes: median_seconds(run, repeats=repeats, warmup=warmup)

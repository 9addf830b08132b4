"""Several seeds per claim: the ``--seeds`` flag's parsing and the one way results report them.

A study run with ``--seeds=0,1,2`` trains each model once per seed and reports ``mean ± std``
over the seeds, where std is the population standard deviation (``ddof=0``) of the per-seed values;
a single seed is reported as its value alone, so a table shows at a glance which rows are single runs.
"""

from collections.abc import Sequence

import numpy as np

SEEDS_HELP = "Seeds; each model trains once per seed and tables report mean ± std over them."


def parse_seeds(values: Sequence[str]) -> list[int]:
    """``["0", "1", "2"]`` (an absl list flag) -> ``[0, 1, 2]``; ValueError on a repeated or non-int seed."""
    try:
        seeds = [int(value) for value in values]
    except ValueError:
        raise ValueError(f"--seeds must be integers, got {list(values)}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct and non-empty, got {list(values)}")
    return seeds


def mean_spread(values: Sequence[float], digits: int = 3) -> str:
    """``"0.912 ± 0.010"`` over seeds, or ``"0.912"`` for one seed."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"

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


def seed_summary(values: Sequence[float]) -> dict:
    """``{"mean", "std", "values"}`` over seeds (population std; 0 for one seed), JSON-ready."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "values": [float(v) for v in array]}


def mean_spread(values: Sequence[float], digits: int = 3) -> str:
    """``"0.912 ± 0.010"`` over seeds, or ``"0.912"`` for one seed."""
    summary = seed_summary(values)
    if len(summary["values"]) == 1:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"

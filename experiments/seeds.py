"""Several seeds per claim: the ``--seeds`` flag's parsing and the one way results report them.

A study run with ``--seeds=0,1,2`` trains each model once per seed and reports ``mean ± std``
over the seeds, where std is the population standard deviation (``ddof=0``) of the per-seed values;
a single seed is reported as its value alone, so a table shows at a glance which rows are single runs.
"""

import json
import os
import time
from collections.abc import Sequence
from typing import Optional

import jax
import numpy as np
from absl import logging

from jaxattn.train import train_and_evaluate

SEEDS_HELP = "Seeds; each model trains once per seed and tables report mean ± std over them."
WALL_TIME_FILE = "wall_time.json"


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


def train_seed(config, seed: int, run_dir: str) -> dict:
    """``train_and_evaluate`` of ``config`` with ``config.seed = seed`` in ``run_dir``, plus its wall time.

    Returns ``{"seed", "step", "num_parameters", "validation": {...}, "test": {...}, "wall_time_s"}``.
    A run whose ``summary.json`` exists finished earlier: it is only restored and evaluated, and keeps
    the wall time recorded when it finished.
    """
    config = config.copy_and_resolve_references()
    config.seed = seed
    finished = os.path.exists(os.path.join(run_dir, "summary.json"))
    logging.info("Seed %d: %s in %s", seed, "finished, evaluating" if finished else "training", run_dir)
    start = time.perf_counter()
    summary = train_and_evaluate(config, run_dir)
    wall_time_path = os.path.join(run_dir, WALL_TIME_FILE)
    if finished and os.path.exists(wall_time_path):
        with open(wall_time_path) as f:
            wall_time = json.load(f)["wall_time_s"]
    else:
        wall_time = time.perf_counter() - start
        if jax.process_index() == 0:
            with open(wall_time_path, "w") as f:
                json.dump({"wall_time_s": wall_time}, f)
    logging.info("Seed %d: validation accuracy %.4f, test accuracy %.4f, %.0f s", seed,
                 summary["validation"]["accuracy"], summary["test"]["accuracy"], wall_time)
    return {"seed": seed, **summary, "wall_time_s": wall_time}


def finished_seed(seed: int, run_dir: str) -> Optional[dict]:
    """The record :func:`train_seed` returns, read from a finished run's ``summary.json`` and its
    recorded wall time without building anything; None if the run has not finished."""
    paths = [os.path.join(run_dir, name) for name in ("summary.json", WALL_TIME_FILE)]
    if not all(os.path.exists(path) for path in paths):
        return None
    with open(paths[0]) as f, open(paths[1]) as g:
        return {"seed": seed, **json.load(f), "wall_time_s": json.load(g)["wall_time_s"]}

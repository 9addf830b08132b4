"""Tile sizes of the diagonal scan kernels (:mod:`pallas_kernels.diagonal_scan`).

See docs/ops.md#block-sizes and docs/ssm.md#the-parallel-scan.
"""

import dataclasses
from typing import Optional

from pallas_kernels.block_sizes import POWER_OF_TWO, KernelBlockSizes, multiple_of


@dataclasses.dataclass(frozen=True)
class ScanBlockSizes(KernelBlockSizes):
    """Features per program and, per platform, how time is walked.

    TPU: ``feature_tile`` a multiple of 128 (lanes), ``time_tile`` steps per grid step (a multiple of
    8, sublanes; a shorter sequence is one tile). Triton: ``feature_tile`` a power of two, ``unroll``
    steps whose loads are issued together (the scan is bound by memory latency), ``num_warps`` and
    ``num_stages``. Defaults: TPU 128 features x 256 steps; Triton 128 features, 16 steps unrolled,
    4 warps, 1 stage.

    Example::

        ScanBlockSizes("triton", feature_tile=256, unroll=8)
    """

    feature_tile: Optional[int] = None
    time_tile: Optional[int] = None
    unroll: Optional[int] = None
    num_warps: Optional[int] = None
    num_stages: Optional[int] = None

    RULES = {
        "feature_tile": {"tpu": (multiple_of(128),), "triton": (POWER_OF_TWO,)},
        "time_tile": {"tpu": (multiple_of(8),)},
        "unroll": {"triton": ()},
    }
    # Triton's unroll: on an H100 (B=8, T=16384, F=1024, fp32 forward) 1 row took 7.5 ms, 4 rows
    # 2.6 ms, 8 rows 2.4 ms, 16 rows 1.4 ms (results/bench_gpu_h100/logs/tune_scan.log).
    DEFAULTS = {
        "tpu": {None: dict(feature_tile=128, time_tile=256)},
        "triton": {None: dict(feature_tile=128, unroll=16, num_warps=4, num_stages=1)},
    }

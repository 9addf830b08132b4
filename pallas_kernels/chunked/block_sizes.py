"""Launch settings of the chunked kernels (:mod:`pallas_kernels.chunked`: linear attention and the
delta rule). Their tile is the chunk, ``chunk_size`` tokens by whole heads, which the ops take as
their own argument (it also tiles the XLA path).

See docs/ops.md#block-sizes and docs/linear_attention.md#the-pallas-kernels.
"""

import dataclasses
from typing import Optional

from pallas_kernels.block_sizes import POWER_OF_TWO, WIDE_FP32, KernelBlockSizes


@dataclasses.dataclass(frozen=True)
class ChunkedBlockSizes(KernelBlockSizes):
    """Warps and pipeline stages of every Triton kernel of a chunked recurrence (the sweeps and the
    chunkwise kernels); the TPU kernels take no setting beyond ``chunk_size``. Defaults: 4 warps and
    2 stages, or 1 stage (no multi-buffered loads) for fp32 heads wider than 64, whose blocks would
    not fit in shared memory; decided per kernel from its sequence operands.

    Example::

        ChunkedBlockSizes("triton", num_warps=8, num_stages=3)
    """

    num_warps: Optional[int] = None
    num_stages: Optional[int] = None

    RULES = {"num_warps": {"triton": (POWER_OF_TWO,)}, "num_stages": {"triton": ()}}
    DEFAULTS = {
        "tpu": {None: {}},
        "triton": {None: dict(num_warps=4, num_stages=2), WIDE_FP32: dict(num_stages=1)},
    }

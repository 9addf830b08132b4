"""Launch settings of the chunked kernels (:mod:`pallas_kernels.chunked`: linear attention and the
delta rule). Their tile is the chunk, ``chunk_size`` tokens by whole heads (or by ``block_v`` value
columns), which the ops take as their own argument (it also tiles the XLA path).

See docs/ops.md#block-sizes and docs/linear_attention.md#the-pallas-kernels.
"""

import dataclasses
from typing import Optional

from pallas_kernels.block_sizes import POWER_OF_TWO, WIDE_FP32, KernelBlockSizes, at_least, multiple_of


@dataclasses.dataclass(frozen=True)
class ChunkedBlockSizes(KernelBlockSizes):
    """Warps and pipeline stages of every Triton kernel of a chunked recurrence (the sweeps and the
    chunkwise kernels), and ``block_v``, value columns per program of the sweeps that allow it.
    Defaults: 4 warps and 2 stages, or 1 stage (no multi-buffered loads) for fp32 heads wider than 64,
    whose blocks would not fit in shared memory; decided per kernel from its sequence operands.

    ``block_v`` (both platforms; Triton: a power of two >= 16, TPU: a multiple of 128 lanes) splits
    the value dimension V of the linear attention forward sweep into blocks, one program per
    (batch, head, value block), each carrying a ``[K, block_v]`` slice of the state: every value
    column follows its own recurrence (``S[:, j]' = e^lam S[:, j] + (K .* e^(lam-b))^T V[:, j]``), so
    the blocks never meet. It raises the number of programs from ``B H`` to ``B H ceil(V / block_v)``,
    meant for small ``B H``, which alone leaves most of a GPU's SMs idle (on an H100 the unsplit
    forward reached about 10 % of the matmul rate at small batch); each program recomputes ``Q K^T``
    for its block, so which ``block_v`` pays is for the device to measure (the split is not yet timed). V is zero-padded to a multiple of ``block_v`` (zero columns add nothing and are cut off);
    a ``block_v`` of at least V (padded) is no split. None, the default: no split. The backward sweeps
    (whose ``dQ, dK`` sum over all of V) and the delta rule's run whole V and ignore it.

    Example::

        ChunkedBlockSizes("triton", num_warps=8, num_stages=3, block_v=32)
    """

    num_warps: Optional[int] = None
    num_stages: Optional[int] = None
    block_v: Optional[int] = None

    RULES = {
        "block_v": {"triton": (POWER_OF_TWO, at_least(16)), "tpu": (multiple_of(128),)},
    }
    DEFAULTS = {
        "tpu": {None: {}},
        "triton": {None: dict(num_warps=4, num_stages=2), WIDE_FP32: dict(num_stages=1)},
    }

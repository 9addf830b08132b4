"""Tile sizes of the flash attention kernels (:mod:`pallas_kernels.flash_attention`).

See docs/ops.md#block-sizes and docs/softmax_attention.md#flash-attention.
"""

import dataclasses
from typing import Optional

from pallas_kernels.block_sizes import POWER_OF_TWO, WIDE_FP32, KernelBlockSizes, at_least, multiple_of

# The Mosaic GPU (Hopper) forward kernel's platform: flash attention only, so it is added here rather
# than to the platforms every family tunes.
MOSAIC_GPU = "mosaic_gpu"


@dataclasses.dataclass(frozen=True)
class FlashBlockSizes(KernelBlockSizes):
    """Query and key tokens per block, and the Triton kernel's warps and pipeline stages.

    ``block_q`` tiles the queries (the outer loop of the forward and dQ passes), ``block_k`` the
    keys (the outer loop of the dK/dV pass). Blocks longer than the (padded) sequence are clamped
    to it. TPU: ``block_q`` a multiple of 8 (sublanes), ``block_k`` of 128 (key segment ids lie on
    lanes). Triton: powers of two >= 16 (``tl.dot`` operands). Defaults: TPU 128 x 128; Triton
    64 x 64 with 4 warps and 2 stages, or 32 x 32 with 1 stage for fp32 heads wider than 64
    (shared memory). Mosaic GPU (``"mosaic_gpu"``, Hopper forward): ``block_q`` and ``block_k``
    multiples of 64 (wgmma rows, 128-byte swizzled tiles), ``num_stages >= 2`` key/value buffers in
    shared memory; default 64 x 64 with 2 stages.

    Example::

        FlashBlockSizes("triton", block_q=128, block_k=32, num_warps=8)
    """

    block_q: Optional[int] = None
    block_k: Optional[int] = None
    num_warps: Optional[int] = None
    num_stages: Optional[int] = None

    RULES = {
        "block_q": {"tpu": (multiple_of(8),), "triton": (POWER_OF_TWO, at_least(16)), MOSAIC_GPU: (multiple_of(64),)},
        "block_k": {"tpu": (multiple_of(128),), "triton": (POWER_OF_TWO, at_least(16)), MOSAIC_GPU: (multiple_of(64),)},
        "num_stages": {MOSAIC_GPU: (at_least(2),)},
    }
    DEFAULTS = {
        "tpu": {None: dict(block_q=128, block_k=128)},
        "triton": {
            None: dict(block_q=64, block_k=64, num_warps=4, num_stages=2),
            WIDE_FP32: dict(block_q=32, block_k=32, num_stages=1),
        },
        MOSAIC_GPU: {None: dict(block_q=64, block_k=64, num_stages=2)},  # bf16/fp16 only: one table
    }
    EXTRA_PLATFORMS = {MOSAIC_GPU: "Mosaic GPU"}

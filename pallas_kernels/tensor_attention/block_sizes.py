"""Tile sizes of the tensor attention kernels (:mod:`pallas_kernels.tensor_attention`).

See docs/ops.md#block-sizes and docs/tensor_attention.md#the-streaming-algorithm.
"""

import dataclasses
from typing import Optional

from pallas_kernels.block_sizes import POWER_OF_TWO, KernelBlockSizes, at_least, multiple_of


@dataclasses.dataclass(frozen=True)
class TensorBlockSizes(KernelBlockSizes):
    """Tokens per block on each axis (queries, k1, k2), and the Triton kernel's warps and stages.

    A tile is ``block_q x block_k1`` pair products (the rows of one matrix) against ``block_k2``
    keys. Blocks longer than the (padded) sequence are clamped to it. TPU: multiples of 8
    (sublanes). Triton: powers of two, ``block_k2 >= 16`` (a ``tl.dot`` operand; keep
    ``block_q * block_k1 >= 16`` too, the pair rows). Defaults: TPU 32 x 16 x 128; Triton
    16 x 8 x 32 with 8 warps and 2 stages.

    Example::

        TensorBlockSizes("tpu", block_q=64, block_k1=8, block_k2=256)
    """

    block_q: Optional[int] = None
    block_k1: Optional[int] = None
    block_k2: Optional[int] = None
    num_warps: Optional[int] = None
    num_stages: Optional[int] = None

    RULES = {
        "block_q": {"tpu": (multiple_of(8),), "triton": (POWER_OF_TWO,)},
        "block_k1": {"tpu": (multiple_of(8),), "triton": (POWER_OF_TWO,)},
        "block_k2": {"tpu": (multiple_of(8),), "triton": (POWER_OF_TWO, at_least(16))},
    }
    DEFAULTS = {
        "tpu": {None: dict(block_q=32, block_k1=16, block_k2=128)},
        "triton": {None: dict(block_q=16, block_k1=8, block_k2=32, num_warps=8, num_stages=2)},
    }

    @property
    def blocks(self) -> tuple[int, int, int]:
        """``(block_q, block_k1, block_k2)``."""
        return self.block_q, self.block_k1, self.block_k2

"""The configurations a search tries: a small grid of block sizes per kernel family and platform.

A candidate is a mapping of fields to values, built into the family's dataclass by the search, so
that a candidate the dataclass refuses (e.g. ``block_q=48`` on Triton, not a power of two) is
recorded as rejected with the dataclass's own message rather than tried. The empty mapping is the
built-in defaults (every field None), which every search times first, as the baseline.

:data:`GRIDS` per family (Triton; TPU):

* flash attention: ``block_q, block_k`` in {32, 64, 128}, ``num_warps`` in {4, 8}, ``num_stages`` in
  {1, 2, 3} (54); TPU ``block_q, block_k`` in {128, 256, 512} (9).
* tensor attention: ``block_q`` {16, 32}, ``block_k1`` {4, 8, 16}, ``block_k2`` {32, 64}, warps
  {4, 8} (24); TPU ``block_q`` {16, 32, 64}, ``block_k1`` {8, 16}, ``block_k2`` {128, 256} (12).
* chunked (linear attention, delta rule): warps {2, 4, 8}, stages {1, 2, 3} (9); TPU: nothing to
  set (the tile is ``chunk_size``, an op argument).
* diagonal scan: ``feature_tile`` {64, 128, 256}, ``unroll`` {4, 8, 16, 32}, warps {2, 4} (24); TPU
  ``feature_tile`` {128, 256, 512}, ``time_tile`` {128, 256, 512} (9).
* L-Mul matmul: ``block_m, block_n`` {16, 32, 64}, ``block_k`` {2, 4, 8}, warps {4, 8} (54); TPU
  ``block_m, block_n`` {128, 256}, ``block_k`` {8, 16} (8).

See docs/autotune.md#what-is-searched.
"""

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from pallas_kernels.block_sizes import KernelBlockSizes
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.diagonal_scan.block_sizes import ScanBlockSizes
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes
from pallas_kernels.lmul_matmul import LMulBlockSizes
from pallas_kernels.tensor_attention.block_sizes import TensorBlockSizes

Candidate = Mapping[str, Any]
DEFAULTS: Candidate = {}  # every field None: the built-in defaults

# The families a cache entry may name, by class name.
FAMILIES: dict[str, type[KernelBlockSizes]] = {
    cls.__name__: cls
    for cls in (FlashBlockSizes, TensorBlockSizes, ChunkedBlockSizes, ScanBlockSizes, LMulBlockSizes)
}

GRIDS: dict[type[KernelBlockSizes], dict[str, dict[str, Sequence[int]]]] = {
    FlashBlockSizes: {
        "triton": dict(block_q=(32, 64, 128), block_k=(32, 64, 128), num_warps=(4, 8), num_stages=(1, 2, 3)),
        "tpu": dict(block_q=(128, 256, 512), block_k=(128, 256, 512)),
    },
    TensorBlockSizes: {
        # block_q * block_k1 >= 16 throughout: the pair rows are a tl.dot operand.
        "triton": dict(block_q=(16, 32), block_k1=(4, 8, 16), block_k2=(32, 64), num_warps=(4, 8)),
        "tpu": dict(block_q=(16, 32, 64), block_k1=(8, 16), block_k2=(128, 256)),
    },
    ChunkedBlockSizes: {
        "triton": dict(num_warps=(2, 4, 8), num_stages=(1, 2, 3)),
        "tpu": {},
    },
    ScanBlockSizes: {
        "triton": dict(feature_tile=(64, 128, 256), unroll=(4, 8, 16, 32), num_warps=(2, 4)),
        "tpu": dict(feature_tile=(128, 256, 512), time_tile=(128, 256, 512)),
    },
    LMulBlockSizes: {
        "triton": dict(block_m=(16, 32, 64), block_n=(16, 32, 64), block_k=(2, 4, 8), num_warps=(4, 8)),
        "tpu": dict(block_m=(128, 256), block_n=(128, 256), block_k=(8, 16)),
    },
}


def grid_candidates(grid: Mapping[str, Sequence[int]]) -> list[Candidate]:
    """Every combination of the grid's values, in the order of its fields (the last varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


def default_candidates(family: type[KernelBlockSizes], platform: str) -> list[Candidate]:
    """The built-in defaults, then the family's grid for ``platform`` (an empty grid: the defaults only)."""
    grid = GRIDS[family][platform]
    return [DEFAULTS] + (grid_candidates(grid) if grid else [])


def describe(candidate: Candidate) -> str:
    """``"block_q=64 block_k=32"``, or ``"defaults"`` for the empty candidate."""
    return " ".join(f"{name}={value}" for name, value in candidate.items()) or "defaults"

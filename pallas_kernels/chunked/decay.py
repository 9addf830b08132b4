"""Log decays inside a chunk, as the chunked recurrences' kernels see them.

A chunk of C rows carries ``b [C]``, the inclusive cumulative log decay from the chunk's start
(``b_i = a_1 + ... + a_i`` for per-row log decays ``a``), and ``lam = b[C-1]``, the whole chunk's.
Row ``i`` sees row ``j <= i`` through ``exp(b_i - b_j)``, the state carried into the chunk through
``exp(b_i)``, and the state leaving it sees row ``j`` through ``exp(lam - b_j)``. Masks come before
``exp``, so no ``inf - inf`` is ever formed.

See docs/linear_attention.md#the-pallas-kernels and docs/ops.md#numerics-conventions.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

_F32 = jnp.float32


class ChunkDecay(NamedTuple):
    """``b`` of one chunk as a column ``[C, 1]`` and a row ``[1, C]``, and ``lam = b[C-1]`` (``[1, 1]``
    or a scalar): kernels load these in the layouts their backend handles best."""

    col: jax.Array
    row: jax.Array
    last: jax.Array

    @classmethod
    def from_col_row(cls, col: jax.Array, row: jax.Array) -> "ChunkDecay":
        """With ``lam`` read off the row by a masked sum (a reduction every backend lowers, where a
        slice of a loaded block is not)."""
        size = row.shape[1]
        last = jnp.sum(jnp.where(iota(row.shape, 1) == size - 1, row, 0.0), axis=1, keepdims=True)
        return cls(col, row, last)


def iota(shape, axis: int) -> jax.Array:
    """int32 indices along ``axis`` of a block of ``shape``."""
    return jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def decay_matrix(size: int, decay: Optional[ChunkDecay], *, strict: bool = False) -> jax.Array:
    """``[C, C]``: ``exp(b_i - b_j)`` on and below the diagonal (below only with ``strict``), 0 above."""
    rows, cols = iota((size, size), 0), iota((size, size), 1)
    mask = rows > cols if strict else rows >= cols
    if decay is None:
        return mask.astype(_F32)
    return jnp.exp(jnp.where(mask, decay.col - decay.row, -jnp.inf))


def decay_factors(decay: Optional[ChunkDecay]):
    """``(e^b [C, 1], e^(lam - b) [C, 1], e^lam)``: how rows see the incoming state, how the outgoing
    state sees rows, and the whole chunk's decay; all ones without decay."""
    if decay is None:
        return 1.0, 1.0, 1.0
    return jnp.exp(decay.col), jnp.exp(decay.last - decay.col), jnp.exp(decay.last)


def chunk_cumsum(log_decay: Optional[jax.Array], chunk_size: int) -> Optional[jax.Array]:
    """``[B, H, T]`` inclusive cumulative sum of the log decay within each chunk (outside a kernel)."""
    if log_decay is None:
        return None
    batch, heads, length = log_decay.shape
    chunks = log_decay.astype(_F32).reshape(batch, heads, length // chunk_size, chunk_size)
    return jnp.cumsum(chunks, axis=-1).reshape(batch, heads, length)

"""Time-axis plumbing shared by the chunked recurrences (linear attention, the delta rule).

Sequences are ``[B, T, ...]``. A chunked path pads T to a multiple of the chunk length, views
the sequence as ``[N, B, C, ...]`` (one scan step per chunk). Segment boundaries of packed
sequences come from :mod:`jaxattn.ops.segments`.

See docs/linear_attention.md#the-chunked-form.
"""

import jax
import jax.numpy as jnp


def pad_time(a, multiple: int):
    """Pads axis 1 of ``a`` with zeros (False for bool) to a multiple of ``multiple``; None stays None."""
    if a is None:
        return None
    pad = -a.shape[1] % multiple
    if not pad:
        return a
    return jnp.pad(a, ((0, 0), (0, pad)) + ((0, 0),) * (a.ndim - 2))


def chunk_major(a: jax.Array, chunk_size: int) -> jax.Array:
    """``[B, T, ...] -> [N, B, C, ...]`` (T a multiple of C): one scan step per chunk. With one
    sequence, ``[N, C, ...]``: a reshape, so the scan reads the input in place (XLA copies a
    ``[N, 1, C, ...]`` operand as a whole first, which for arrays beyond the last-level cache costs
    a third of the attention's time on CPU)."""
    batch, length = a.shape[:2]
    if batch == 1:
        return a.reshape(length // chunk_size, chunk_size, *a.shape[2:])
    return jnp.moveaxis(a.reshape(batch, length // chunk_size, chunk_size, *a.shape[2:]), 1, 0)

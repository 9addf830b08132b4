"""Packed sequences: where segments start and end, and which tokens share one.

``segment_ids [B, T]`` give each token the id of the sequence it belongs to (packing several short
sequences into one row); a change of id between neighbours is a boundary. Every op and layer that
respects segments derives its masks here, so that "the same segment" means one thing everywhere:

* recurrences (linear attention, the delta rule, S5, S4D) drop their state at a start
  (:func:`segment_starts`, :func:`state_resets`, and :func:`segment_index` inside a chunk);
* attention masks pairs of different segments (:func:`same_segment`);
* a convolution, which cannot restart, keeps the first token's segment only
  (:func:`in_first_segment`) or masks the taps that cross a boundary (:func:`same_segment`).

See docs/ops.md#packed-sequences.
"""

import jax
import jax.numpy as jnp


def segment_starts(segment_ids: jax.Array) -> jax.Array:
    """``[B, T]`` bool: True where the id differs from the previous token's (never at ``t = 0``)."""
    return jnp.concatenate([jnp.zeros_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
                           axis=1)


def ends_from_starts(starts: jax.Array) -> jax.Array:
    """``[B, T]`` bool: a segment ends at ``t`` where the next one starts at ``t + 1`` (the time
    reversal of a sequence turns these into its starts)."""
    return jnp.concatenate([starts[:, 1:], jnp.zeros_like(starts[:, :1])], axis=1)


def segment_ends(segment_ids: jax.Array) -> jax.Array:
    """``[B, T]`` bool: True where the id differs from the next token's (never at ``t = T - 1``)."""
    return ends_from_starts(segment_starts(segment_ids))


def state_resets(segment_ids: jax.Array, reverse: bool = False) -> jax.Array:
    """``[B, T]`` bool: where a scan must drop the state carried from the previous step it took.

    Forward: every segment start and ``t = 0``; ``reverse`` (a scan from ``T - 1`` down): every
    segment end and ``t = T - 1``. Multiplying the transition by ``~resets`` restarts each segment
    (and, at the sequence's edge, ignores any initial state).
    """
    boundary = segment_ends(segment_ids) if reverse else segment_starts(segment_ids)
    return boundary.at[:, -1 if reverse else 0].set(True)


def segment_index(starts: jax.Array, axis: int = -1) -> jax.Array:
    """The running count of ``starts`` (bool, inclusive) along ``axis``, int32: tokens with equal
    counts share a segment, and a count of 0 marks the tokens before the first start (which a
    state carried in from earlier still reaches)."""
    return jnp.cumsum(starts.astype(jnp.int32), axis=axis)


def same_segment(ids_a: jax.Array, ids_b: jax.Array) -> jax.Array:
    """``[B, Ta, Tb]`` bool: ``ids_a[b, i] == ids_b[b, j]`` (any per-token labels: ids or
    :func:`segment_index` counts)."""
    return ids_a[:, :, None] == ids_b[:, None, :]


def in_first_segment(segment_ids: jax.Array) -> jax.Array:
    """``[B, T]`` bool: the tokens of the segment of each row's first token (for one sequence
    followed by padding: the real tokens)."""
    return segment_ids == segment_ids[:, :1]

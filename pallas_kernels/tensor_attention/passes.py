"""The four passes of tensor attention as loops over tiles: forward, dq, dk1/dv1 and dk2/dv2.

Operands are head-major ``[G, T, d]`` and grouped by the token axis that indexes them: axis 0
(queries: ``q``, and ``dO, lse, delta`` in the backward), axis 1 (``k1, v1``) and axis 2
(``k2, v2``). A :class:`Pass` owns one axis (its ``grid_axis``): for each block of it, it folds
``step`` (from :mod:`.block_math`) over the tiles of the other two axes, in increasing axis order,
and writes ``finish``'s outputs, indexed by that axis. :func:`block_range` gives the blocks the
causal / window mask and the padding leave visible, so the TPU and Triton modules skip the rest.

See docs/tensor_attention.md#the-streaming-algorithm.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from pallas_kernels.tensor_attention import block_math

QUERY, K1, K2 = 0, 1, 2


class Layout(NamedTuple):
    """The operands of a pass ``(axis-0 arrays, axis-1 arrays, axis-2 arrays)``, each ``[G, T, d]``
    with ``T`` padded to a multiple of every block, the block sizes ``(bi, bj, bk)`` and the mask."""

    operands: tuple[Sequence[jax.Array], Sequence[jax.Array], Sequence[jax.Array]]
    blocks: tuple[int, int, int]
    length: int  # real (unpadded) tokens
    causal: bool  # j, k <= i (implied by a window)
    window: Optional[tuple[int, int]]  # (w1, w2): i - w1 < j, i - w2 < k

    def num_blocks(self, axis: int) -> int:
        return self.operands[axis][0].shape[1] // self.blocks[axis]


class Pass(NamedTuple):
    name: str
    grid_axis: int  # the axis whose blocks are the outputs' rows
    carry: Callable  # layout -> [(shape, fill value)] of the fp32 accumulators
    step: Callable  # (axis-0 blocks, axis-1 blocks, axis-2 blocks, keep [bi, bj, bk], carry) -> carry
    finish: Callable  # carry -> outputs [block, w]
    out_widths: Callable  # layout -> [w]


def loop_axes(grid_axis: int) -> tuple[int, int]:
    """The (outer, inner) loop axes of a pass; the inner one is always a key axis."""
    return tuple(a for a in (QUERY, K1, K2) if a != grid_axis)


def _block_of(position: jax.Array, block: int) -> jax.Array:
    """The block holding a position >= 0 (``lax.div``: no sign handling, which Mosaic lowers per chip)."""
    return jax.lax.div(position, jnp.int32(block))


def _where_int32(condition: jax.Array, x, y) -> jax.Array:
    """``where`` of two block indices as int32 arrays: Pallas Triton lowers a ``where`` of two Python
    ints (weakly typed) to an i1 select, which fails Triton's verifier as a loop bound."""
    return jnp.where(condition, jnp.asarray(x, jnp.int32), jnp.asarray(y, jnp.int32))


def block_range(layout: Layout, axis: int, starts: dict) -> tuple[jax.Array, jax.Array]:
    """Blocks ``[lo, hi)`` of ``axis`` that may hold a visible triple together with the blocks that
    start at ``starts`` (``{axis: first position}``, holding the query axis when ``axis`` is a key axis,
    else a key axis). Blocks past the real tokens are never visible."""
    block, real_blocks = layout.blocks[axis], -(-layout.length // layout.blocks[axis])
    if axis != QUERY:  # key j (or k) of a query block [i0, i0 + bi): j <= i, j > i - w
        i0, bi = starts[QUERY], layout.blocks[QUERY]
        lo, hi = 0, real_blocks
        if layout.causal:
            hi = jnp.minimum(hi, _block_of(i0 + bi - 1, block) + 1)
        if layout.window is not None:
            lo = _block_of(jnp.maximum(0, i0 - layout.window[axis - 1] + 1), block)
        return lo, _where_int32(i0 < layout.length, hi, lo)  # a block of padded queries sees nothing
    (key_axis, k0), = starts.items()  # queries of a key block [k0, k0 + b): i >= k, i < k + w
    lo, hi = 0, real_blocks
    if layout.causal:
        lo = _block_of(k0, block)
    if layout.window is not None:
        hi = jnp.minimum(hi, _block_of(k0 + layout.blocks[key_axis] + layout.window[key_axis - 1] - 2, block) + 1)
    return lo, _where_int32(k0 < layout.length, hi, lo)


def tile_visible(layout: Layout, indices: Sequence[jax.Array]) -> jax.Array:
    """Whether the tile of block ``indices`` (on the three axes) may hold a visible triple."""
    visible = True
    for axis in (K1, K2):
        lo, hi = block_range(layout, axis, {QUERY: indices[QUERY] * layout.blocks[QUERY]})
        visible = visible & (lo <= indices[axis]) & (indices[axis] < hi)
    return visible


def fetched_blocks(layout: Layout, grid_axis: int, indices: dict) -> dict:
    """The blocks ``{axis: index}`` that a grid step ``indices`` (blocks of the three axes, loops in
    :func:`loop_axes` order) reads: its own when its tile may be visible, else those of the nearest
    visible step in loop order (the last one before it once the outer block is past its range, else
    the next one), so that a run of skipped steps reads the same blocks and fetches nothing new."""
    outer, inner = loop_axes(grid_axis)

    def clamped_range(axis, starts):
        lo, hi = block_range(layout, axis, starts)
        return lo, jnp.maximum(hi, lo + 1)  # lo is a block of the (padded) array even for an empty range

    outer_lo, outer_hi = clamped_range(outer, {grid_axis: indices[grid_axis] * layout.blocks[grid_axis]})
    outer_index = jnp.clip(indices[outer], outer_lo, outer_hi - 1)
    query_index = indices[QUERY] if grid_axis == QUERY else outer_index
    inner_lo, inner_hi = clamped_range(inner, {QUERY: query_index * layout.blocks[QUERY]})
    inner_index = jnp.where(indices[outer] < outer_lo, inner_lo, jnp.where(
        indices[outer] >= outer_hi, inner_hi - 1, jnp.clip(indices[inner], inner_lo, inner_hi - 1)))
    return {grid_axis: indices[grid_axis], outer: outer_index, inner: inner_index}


def forward_pass(scale: float) -> Pass:
    """Axis 0: ``(q,)``, axis 1: ``(k1, v1)``, axis 2: ``(k2, v2)``; outputs ``o [bi, Dv]``, ``lse [bi, 1]``."""

    def step(queries, k1s, k2s, keep, carry):
        (q,), (k1, v1), (k2, v2) = queries, k1s, k2s
        carry = block_math.SoftmaxCarry(*carry)
        return list(block_math.online_softmax_step(carry, q, k1, k2, v1, v2, keep, scale))

    def value_dim(layout):
        return layout.operands[K1][1].shape[-1]

    return Pass("forward", QUERY, lambda layout: block_math.initial_carry(layout.blocks[QUERY], value_dim(layout)), step,
                lambda c: list(block_math.finish(block_math.SoftmaxCarry(*c))), lambda layout: [value_dim(layout), 1])


def _backward_pass(name: str, grid_axis: int, step_fn: Callable, scale: float) -> Pass:
    """Axis 0: ``(q, dO, lse, delta)``, axis 1: ``(k1, v1)``, axis 2: ``(k2, v2)``; outputs the gradients
    of the ``grid_axis`` operands other than the row statistics (``dq``; ``dk1, dv1``; ``dk2, dv2``)."""

    def widths(layout):
        return [a.shape[-1] for a in layout.operands[grid_axis][: 1 if grid_axis == QUERY else 2]]

    def carry(layout):
        return [((layout.blocks[grid_axis], w), 0.0) for w in widths(layout)]

    def step(queries, k1s, k2s, keep, carry):
        (q, do, lse, delta), (k1, v1), (k2, v2) = queries, k1s, k2s
        out = step_fn(*carry, q, k1, k2, v1, v2, do, lse, delta, keep, scale)
        return list(out) if isinstance(out, tuple) else [out]

    return Pass(name, grid_axis, carry, step, list, widths)


def dq_pass(scale: float) -> Pass:
    return _backward_pass("dq", QUERY, block_math.dq_step, scale)


def dk1_dv1_pass(scale: float) -> Pass:
    return _backward_pass("dk1_dv1", K1, block_math.dk1_dv1_step, scale)


def dk2_dv2_pass(scale: float) -> Pass:
    return _backward_pass("dk2_dv2", K2, block_math.dk2_dv2_step, scale)

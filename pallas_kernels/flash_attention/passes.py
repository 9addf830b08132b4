"""The three passes of flash attention as block loops: forward, dQ, and dK/dV.

A :class:`Layout` says which arrays are indexed by the outer block (queries; keys in the dK/dV
pass) and which by the inner one, and a :class:`Pass` gives the carried accumulators, the
per-block ``step`` (from :mod:`.block_math`) and the outputs. The TPU and Triton modules run any
pass, so each piece of math exists once.

See docs/softmax_attention.md#flash-attention.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple, Optional

import jax

from pallas_kernels.flash_attention import block_math


class Layout(NamedTuple):
    """Head-major ``[B, H, T, d]`` operands of a pass, its blocking and its mask."""

    outer: Sequence[jax.Array]
    inner: Sequence[jax.Array]
    q_segments: Optional[jax.Array]  # [B, Tq] int, or None
    k_segments: Optional[jax.Array]  # [B, Tk] int, or None
    outer_is_query: bool
    block_outer: int
    block_inner: int
    causal_offset: Optional[int]  # query i sees keys j <= i + offset; None: not causal
    num_keys: int  # real (unpadded) keys


class Pass(NamedTuple):
    name: str
    carry: Callable  # layout -> [(shape, fill value)] of the fp32 accumulators
    step: Callable  # (outer blocks, inner blocks, keep [bq, bk], carry) -> carry
    finish: Callable  # carry -> outputs [block_outer, w]
    out_widths: Callable  # layout -> [w]


def forward_pass(scale: float) -> Pass:
    """Outer: ``(q,)``; inner: ``(k, v)``; outputs ``o [bq, Dv]`` and ``lse [bq, 1]``."""

    def carry(layout):
        block, value_dim = layout.block_outer, layout.inner[1].shape[-1]
        return [((block, 1), block_math.MASK_VALUE), ((block, 1), 0.0), ((block, value_dim), 0.0)]

    def step(outer, inner, keep, carry):
        (q,), (k, v) = outer, inner
        return list(block_math.online_softmax_step(block_math.SoftmaxCarry(*carry), block_math.scores(q, k, keep, scale), v))

    return Pass("forward", carry, step, lambda c: list(block_math.finish(block_math.SoftmaxCarry(*c))),
                lambda layout: [layout.inner[1].shape[-1], 1])


def dq_pass(scale: float) -> Pass:
    """Outer: ``(q, do, lse, delta)``; inner: ``(k, v)``; output ``dq [bq, D]``."""

    def step(outer, inner, keep, carry):
        (q, do, lse, delta), (k, v) = outer, inner
        return [block_math.dq_step(carry[0], q, k, v, do, lse, delta, keep, scale)]

    return Pass("dq", lambda layout: [((layout.block_outer, layout.outer[0].shape[-1]), 0.0)], step, list,
                lambda layout: [layout.outer[0].shape[-1]])


def dkv_pass(scale: float) -> Pass:
    """Outer: ``(k, v)``; inner: ``(q, do, lse, delta)``; outputs ``dk [bk, D]``, ``dv [bk, Dv]``."""

    def carry(layout):
        return [((layout.block_outer, a.shape[-1]), 0.0) for a in layout.outer]

    def step(outer, inner, keep, carry):
        (k, v), (q, do, lse, delta) = outer, inner
        return list(block_math.dkv_step(*carry, q, k, v, do, lse, delta, keep, scale))

    return Pass("dkv", carry, step, list, lambda layout: [a.shape[-1] for a in layout.outer])

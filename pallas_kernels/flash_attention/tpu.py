"""TPU (Mosaic) block loop of flash attention: grid (batch, head, outer block, inner block) with
the inner axis sequential and the accumulators in VMEM scratch.

A pass (forward, dq or dkv) is a :class:`pallas_kernels.flash_attention.passes.Pass`: for each
outer block (queries, or keys for dkv) it folds ``step`` over the inner blocks that the causal mask
leaves visible (the others are skipped) and writes ``finish``'s outputs. Arrays are head-major
``[B, H, T, d]``; segment ids come as a query column ``[B, Tq, 1]`` and a key row ``[B, 1, Tk]``.

See docs/softmax_attention.md#flash-attention.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.flash_attention.block_math import Positions, keep_mask



def block_size(length: int, block: int) -> int:
    """``block`` tokens (:class:`~pallas_kernels.flash_attention.block_sizes.FlashBlockSizes`), or the
    whole (8-padded) sequence when it is shorter."""
    return min(block, -(-length // 8) * 8)


def _kernel(*refs, spec, layout):
    num_outer, num_inner, segmented = len(layout.outer), len(layout.inner), layout.q_segments is not None
    outer_refs, refs = refs[:num_outer], refs[num_outer:]
    inner_refs, refs = refs[:num_inner], refs[num_inner:]
    segment_refs, refs = (refs[:2], refs[2:]) if segmented else ((None, None), refs)
    num_out = len(spec.out_widths(layout))
    out_refs, carry_refs = refs[:num_out], refs[num_out:]
    outer_index, inner_index = pl.program_id(2), pl.program_id(3)
    starts = (outer_index * layout.block_outer, inner_index * layout.block_inner)
    q_start, k_start = starts if layout.outer_is_query else starts[::-1]
    block_q, block_k = (layout.block_outer, layout.block_inner)[:: 1 if layout.outer_is_query else -1]

    @pl.when(inner_index == 0)
    def _():
        for ref, (_, fill) in zip(carry_refs, spec.carry(layout)):
            ref[...] = jnp.full(ref.shape, fill, jnp.float32)

    visible = True if layout.causal_offset is None else k_start <= q_start + block_q - 1 + layout.causal_offset

    @pl.when(visible)
    def _():
        q_segments, k_segments = (r[...] if r is not None else None for r in segment_refs)
        positions = Positions(q_start, k_start, layout.causal_offset, layout.num_keys, q_segments, k_segments)
        keep = keep_mask(positions, block_q, block_k)
        carry = spec.step([r[...] for r in outer_refs], [r[...] for r in inner_refs], keep, [r[...] for r in carry_refs])
        for ref, value in zip(carry_refs, carry):
            ref[...] = value

    @pl.when(inner_index == pl.num_programs(3) - 1)
    def _():
        for ref, value in zip(out_refs, spec.finish([r[...] for r in carry_refs])):
            ref[...] = value.astype(ref.dtype)


def run(spec, layout, block_sizes=None, *, interpret: bool = False) -> list[jax.Array]:
    """Runs one pass; returns fp32 ``[B, H, T_outer, w]`` per output width. The blocks are the
    layout's; ``block_sizes`` (a TPU :class:`~pallas_kernels.flash_attention.block_sizes.FlashBlockSizes`)
    holds nothing else for Mosaic."""
    del block_sizes
    batch, heads, outer_length = layout.outer[0].shape[:3]
    inner_length = layout.inner[0].shape[2]
    bo, bi = layout.block_outer, layout.block_inner
    outer_spec = lambda w: pl.BlockSpec((None, None, bo, w), lambda b, h, i, j: (b, h, i, 0))  # noqa: E731
    inner_spec = lambda w: pl.BlockSpec((None, None, bi, w), lambda b, h, i, j: (b, h, j, 0))  # noqa: E731
    args = [*layout.outer, *layout.inner]
    in_specs = [outer_spec(a.shape[-1]) for a in layout.outer] + [inner_spec(a.shape[-1]) for a in layout.inner]
    if layout.q_segments is not None:
        block_q, block_k = (bo, bi) if layout.outer_is_query else (bi, bo)
        query_block = (lambda i, j: i) if layout.outer_is_query else (lambda i, j: j)
        key_block = (lambda i, j: j) if layout.outer_is_query else (lambda i, j: i)
        args += [layout.q_segments[:, :, None], layout.k_segments[:, None, :]]
        in_specs += [
            pl.BlockSpec((None, block_q, 1), lambda b, h, i, j: (b, query_block(i, j), 0)),
            pl.BlockSpec((None, 1, block_k), lambda b, h, i, j: (b, 0, key_block(i, j))),
        ]
    outputs = pl.pallas_call(
        lambda *refs: _kernel(*refs, spec=spec, layout=layout),
        grid=(batch, heads, outer_length // bo, inner_length // bi),
        in_specs=in_specs,
        out_specs=[outer_spec(w) for w in spec.out_widths(layout)],
        out_shape=[jax.ShapeDtypeStruct((batch, heads, outer_length, w), jnp.float32) for w in spec.out_widths(layout)],
        scratch_shapes=[pltpu.VMEM(shape, jnp.float32) for shape, _ in spec.carry(layout)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name=f"flash_attention_{spec.name}",
    )(*args)
    return list(outputs)

"""GPU (Triton backend) block loop of flash attention: one program per (batch, head, outer block)
loops over the inner blocks the causal mask leaves visible, accumulators in registers.

Runs any :class:`pallas_kernels.flash_attention.passes.Pass`, like the TPU module. Triton blocks
need power-of-two sizes of at least 16: head sizes are zero-padded to one (row statistics, of
width 1, are not padded) and the outputs cut back.

See docs/softmax_attention.md#flash-attention.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.dot import fp32_algorithm
from pallas_kernels.flash_attention.block_math import Positions, keep_mask
from pallas_kernels.platform import triton_fp32_dot

_MIN_BLOCK = 16


def block_size(length: int, block: int) -> int:
    """``block`` tokens (:class:`~pallas_kernels.flash_attention.block_sizes.FlashBlockSizes`: 64, or
    32 for fp32 heads wider than 64, for shared memory), or the power of two >= 16 above a shorter
    length."""
    return min(block, max(_MIN_BLOCK, pl.next_power_of_2(length)))


def _padded_width(width: int) -> int:
    return width if width == 1 else max(_MIN_BLOCK, pl.next_power_of_2(width))


def _pad_width(a: jax.Array) -> jax.Array:
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, _padded_width(a.shape[-1]) - a.shape[-1])])


def _visible_range(layout, outer_start, num_inner):
    """Inner blocks ``[lo, hi)`` that the causal mask leaves visible from this outer block."""
    if layout.causal_offset is None:
        return 0, num_inner
    bo, bi, offset = layout.block_outer, layout.block_inner, layout.causal_offset
    if layout.outer_is_query:  # keys up to the block's last query + offset
        return 0, jnp.minimum(num_inner, (outer_start + bo - 1 + offset) // bi + 1)
    # queries from the first that sees this key block's first key: i + offset >= k_start
    return jnp.maximum(0, (outer_start - offset) // bi), num_inner


def _kernel(*refs, spec, layout, num_inner):
    num_outer_in, num_inner_in, segmented = len(layout.outer), len(layout.inner), layout.q_segments is not None
    outer_refs, refs = refs[:num_outer_in], refs[num_outer_in:]
    inner_refs, refs = refs[:num_inner_in], refs[num_inner_in:]
    (q_seg_ref, k_seg_ref), out_refs = (refs[:2], refs[2:]) if segmented else ((None, None), refs)
    bo, bi = layout.block_outer, layout.block_inner
    outer_start = pl.program_id(2) * bo
    outer_rows = pl.ds(pl.multiple_of(outer_start, bo), bo)
    outer = [r[outer_rows, :] for r in outer_refs]

    def step(j, carry):
        inner_start = j * bi
        inner_rows = pl.ds(pl.multiple_of(inner_start, bi), bi)
        q_start, k_start = (outer_start, inner_start) if layout.outer_is_query else (inner_start, outer_start)
        q_rows, k_rows = (outer_rows, inner_rows) if layout.outer_is_query else (inner_rows, outer_rows)
        q_segments = None if not segmented else q_seg_ref[q_rows, :]
        k_segments = None if not segmented else k_seg_ref[:, k_rows]
        block_q, block_k = (bo, bi) if layout.outer_is_query else (bi, bo)
        positions = Positions(q_start, k_start, layout.causal_offset, layout.num_keys, q_segments, k_segments)
        keep = keep_mask(positions, block_q, block_k)
        return spec.step(outer, [r[inner_rows, :] for r in inner_refs], keep, carry)

    lo, hi = _visible_range(layout, outer_start, num_inner)
    init = [jnp.full(shape, fill, jnp.float32) for shape, fill in spec.carry(layout)]
    carry = jax.lax.fori_loop(lo, hi, lambda j, c: list(step(j, c)), init)
    for ref, value in zip(out_refs, spec.finish(carry)):
        ref[outer_rows, :] = value.astype(ref.dtype)


def run(spec, layout, block_sizes, *, interpret: bool = False) -> list[jax.Array]:
    """Runs one pass; returns fp32 ``[B, H, T_outer, w]`` per output width. Blocks come from the
    layout, warps and stages from ``block_sizes`` (a resolved Triton
    :class:`~pallas_kernels.flash_attention.block_sizes.FlashBlockSizes`)."""
    widths = spec.out_widths(layout)
    layout = layout._replace(outer=[_pad_width(a) for a in layout.outer], inner=[_pad_width(a) for a in layout.inner])
    batch, heads, outer_length = layout.outer[0].shape[:3]
    inner_length = layout.inner[0].shape[2]
    whole = lambda a: pl.BlockSpec((None, None, *a.shape[2:]), lambda b, h, i: (b, h, 0, 0))  # noqa: E731
    args = [*layout.outer, *layout.inner]
    in_specs = [whole(a) for a in args]
    if layout.q_segments is not None:
        args += [layout.q_segments[:, :, None], layout.k_segments[:, None, :]]
        in_specs += [
            pl.BlockSpec((None, layout.q_segments.shape[1], 1), lambda b, h, i: (b, 0, 0)),
            pl.BlockSpec((None, 1, layout.k_segments.shape[1]), lambda b, h, i: (b, 0, 0)),
        ]
    padded_widths = spec.out_widths(layout)
    with fp32_algorithm(triton_fp32_dot(interpret)):
        outputs = pl.pallas_call(
            lambda *refs: _kernel(*refs, spec=spec, layout=layout, num_inner=inner_length // layout.block_inner),
            grid=(batch, heads, outer_length // layout.block_outer),
            in_specs=in_specs,
            out_specs=[pl.BlockSpec((None, None, outer_length, w), lambda b, h, i: (b, h, 0, 0)) for w in padded_widths],
            out_shape=[jax.ShapeDtypeStruct((batch, heads, outer_length, w), jnp.float32) for w in padded_widths],
            compiler_params=pltriton.CompilerParams(num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages),
            interpret=interpret,
            name=f"flash_attention_{spec.name}",
        )(*args)
    return [o[..., :w] for o, w in zip(outputs, widths)]

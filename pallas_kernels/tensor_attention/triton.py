"""GPU (Triton backend) tile loop of tensor attention: one program per (head, grid-axis block) runs
two nested loops over the blocks of the other two axes that the mask leaves visible (loop bounds
from :func:`pallas_kernels.tensor_attention.passes.block_range`), accumulators in registers.

Runs any :class:`pallas_kernels.tensor_attention.passes.Pass`, like the TPU module. Blocks
(:class:`~pallas_kernels.tensor_attention.block_sizes.TensorBlockSizes`; by default): 16 queries x
8 k1 tokens make the ``[128, D]`` pair matrix, against 32 k2 tokens. Triton blocks need
power-of-two sizes of at least 16 in matrix products: head sizes are zero-padded to one (row
statistics, of width 1, are not padded) and the outputs cut back.

See docs/tensor_attention.md#the-streaming-algorithm.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.dot import fp32_algorithm
from pallas_kernels.platform import triton_fp32_dot
from pallas_kernels.tensor_attention import passes
from pallas_kernels.tensor_attention.block_math import Positions, keep_mask

_MIN_WIDTH = 16


def block_sizes(length: int, sizes) -> tuple[int, int, int]:
    """Per-axis blocks ``sizes.blocks`` (a :class:`~pallas_kernels.tensor_attention.block_sizes.TensorBlockSizes`),
    each clamped to the padded ``length`` (which each divides)."""
    return tuple(min(b, length) for b in sizes.blocks)


def _padded_width(width: int) -> int:
    return width if width == 1 else max(_MIN_WIDTH, pl.next_power_of_2(width))


def _pad_width(a: jax.Array) -> jax.Array:
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, _padded_width(a.shape[-1]) - a.shape[-1])])


def _kernel(*refs, spec, layout):
    counts = [len(ops) for ops in layout.operands]
    operand_refs = [refs[sum(counts[:a]) : sum(counts[: a + 1])] for a in range(3)]
    out_refs = refs[sum(counts) :]
    grid_axis, (outer_axis, inner_axis) = spec.grid_axis, passes.loop_axes(spec.grid_axis)

    def rows(axis, index):
        block = layout.blocks[axis]
        return pl.ds(pl.multiple_of(index * block, block), block)

    def load(axis, index):
        return [r[rows(axis, index), :] for r in operand_refs[axis]]

    grid_index = pl.program_id(1)
    grid_blocks = load(grid_axis, grid_index)

    def outer_step(outer_index, carry):
        outer_blocks = load(outer_axis, outer_index)

        def inner_step(inner_index, carry):
            index = {grid_axis: grid_index, outer_axis: outer_index, inner_axis: inner_index}
            blocks = {grid_axis: grid_blocks, outer_axis: outer_blocks, inner_axis: load(inner_axis, inner_index)}
            starts = [index[axis] * layout.blocks[axis] for axis in range(3)]
            keep = keep_mask(Positions(*starts, layout.length, layout.causal, layout.window), *layout.blocks)
            return list(spec.step(blocks[0], blocks[1], blocks[2], keep, carry))

        query_index = grid_index if grid_axis == passes.QUERY else outer_index
        lo, hi = passes.block_range(layout, inner_axis, {passes.QUERY: query_index * layout.blocks[passes.QUERY]})
        return jax.lax.fori_loop(lo, hi, inner_step, carry)

    lo, hi = passes.block_range(layout, outer_axis, {grid_axis: grid_index * layout.blocks[grid_axis]})
    init = [jnp.full(shape, fill, jnp.float32) for shape, fill in spec.carry(layout)]
    carry = jax.lax.fori_loop(lo, hi, outer_step, init)
    for ref, value in zip(out_refs, spec.finish(carry)):
        ref[rows(grid_axis, grid_index), :] = value.astype(ref.dtype)


def run(spec, layout, block_sizes, *, interpret: bool = False) -> list[jax.Array]:
    """Runs one pass; returns fp32 ``[G, T, w]`` per output width, indexed by the pass's axis. Blocks
    come from the layout, warps and stages from ``block_sizes`` (Triton's, resolved)."""
    widths = spec.out_widths(layout)
    layout = layout._replace(operands=tuple([_pad_width(a) for a in ops] for ops in layout.operands))
    heads, length = layout.operands[0][0].shape[:2]
    args = [a for ops in layout.operands for a in ops]
    whole = lambda w: pl.BlockSpec((None, length, w), lambda g, i: (g, 0, 0))  # noqa: E731
    padded_widths = spec.out_widths(layout)
    with fp32_algorithm(triton_fp32_dot(interpret)):
        outputs = pl.pallas_call(
            lambda *refs: _kernel(*refs, spec=spec, layout=layout),
            grid=(heads, layout.num_blocks(spec.grid_axis)),
            in_specs=[whole(a.shape[-1]) for a in args],
            out_specs=[whole(w) for w in padded_widths],
            out_shape=[jax.ShapeDtypeStruct((heads, length, w), jnp.float32) for w in padded_widths],
            compiler_params=pltriton.CompilerParams(num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages),
            interpret=interpret,
            name=f"tensor_attention_{spec.name}",
        )(*args)
    return [o[..., :w] for o, w in zip(outputs, widths)]

"""TPU (Mosaic) tile loop of tensor attention: grid (head, grid-axis block, outer block, inner block)
with the last two axes sequential and the accumulators in VMEM scratch.

A pass (:class:`pallas_kernels.tensor_attention.passes.Pass`) owns one token axis; the two others
are the sequential grid axes, in increasing axis order. Each step gets one block of every operand
(``[b, d]`` of the ``[G, T, d]`` arrays, ``T`` a multiple of the blocks) and folds ``step`` over
its tile when the mask leaves any triple of it visible. Other steps are skipped with ``pl.when``
and read the blocks of a neighbouring visible step (:func:`.passes.fetched_blocks`): no new copies.
Blocks (:class:`~pallas_kernels.tensor_attention.block_sizes.TensorBlockSizes`; by default): 32
queries x 16 k1 tokens make the ``[512, D]`` pair matrix, against 128 k2 tokens (or the whole,
8-aligned, sequence when shorter).

See docs/tensor_attention.md#the-streaming-algorithm.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.tensor_attention import passes
from pallas_kernels.tensor_attention.block_math import Positions, keep_mask

def block_sizes(length: int, sizes) -> tuple[int, int, int]:
    """Per-axis blocks ``sizes.blocks`` (a :class:`~pallas_kernels.tensor_attention.block_sizes.TensorBlockSizes`),
    each clamped to the padded ``length`` (which each divides)."""
    return tuple(min(b, length) for b in sizes.blocks)


def _kernel(*refs, spec, layout):
    counts = [len(ops) for ops in layout.operands]
    operand_refs = [refs[sum(counts[:a]) : sum(counts[: a + 1])] for a in range(3)]
    num_out = len(spec.out_widths(layout))
    out_refs, carry_refs = refs[sum(counts) : sum(counts) + num_out], refs[sum(counts) + num_out :]
    order = (spec.grid_axis, *passes.loop_axes(spec.grid_axis))
    index = {axis: pl.program_id(1 + n) for n, axis in enumerate(order)}
    indices = [index[axis] for axis in range(3)]
    starts = [indices[axis] * layout.blocks[axis] for axis in range(3)]
    sequential_first = (pl.program_id(2) == 0) & (pl.program_id(3) == 0)
    sequential_last = (pl.program_id(2) == pl.num_programs(2) - 1) & (pl.program_id(3) == pl.num_programs(3) - 1)

    @pl.when(sequential_first)
    def _():
        for ref, (_, fill) in zip(carry_refs, spec.carry(layout)):
            ref[...] = jnp.full(ref.shape, fill, jnp.float32)

    @pl.when(passes.tile_visible(layout, indices))
    def _():
        keep = keep_mask(Positions(*starts, layout.length, layout.causal, layout.window), *layout.blocks)
        blocks = [[r[...] for r in axis_refs] for axis_refs in operand_refs]
        carry = spec.step(*blocks, keep, [r[...] for r in carry_refs])
        for ref, value in zip(carry_refs, carry):
            ref[...] = value

    @pl.when(sequential_last)
    def _():
        for ref, value in zip(out_refs, spec.finish([r[...] for r in carry_refs])):
            ref[...] = value.astype(ref.dtype)


def run(spec, layout, block_sizes=None, *, interpret: bool = False) -> list[jax.Array]:
    """Runs one pass; returns fp32 ``[G, T, w]`` per output width, indexed by the pass's axis. The
    blocks are the layout's; ``block_sizes`` (TPU's) holds nothing else for Mosaic."""
    del block_sizes
    heads, length = layout.operands[0][0].shape[:2]
    order = (spec.grid_axis, *passes.loop_axes(spec.grid_axis))

    def spec_of(axis, width):
        def index_map(g, *ids):
            return g, passes.fetched_blocks(layout, spec.grid_axis, dict(zip(order, ids)))[axis], 0

        return pl.BlockSpec((None, layout.blocks[axis], width), index_map)

    args = [a for ops in layout.operands for a in ops]
    in_specs = [spec_of(axis, a.shape[-1]) for axis, ops in enumerate(layout.operands) for a in ops]
    widths = spec.out_widths(layout)
    outputs = pl.pallas_call(
        lambda *refs: _kernel(*refs, spec=spec, layout=layout),
        grid=(heads, *(layout.num_blocks(axis) for axis in order)),
        in_specs=in_specs,
        out_specs=[spec_of(spec.grid_axis, w) for w in widths],
        out_shape=[jax.ShapeDtypeStruct((heads, length, w), jnp.float32) for w in widths],
        scratch_shapes=[pltpu.VMEM(shape, jnp.float32) for shape, _ in spec.carry(layout)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary", "arbitrary")),
        interpret=interpret,
        name=f"tensor_attention_{spec.name}",
    )(*args)
    return list(outputs)

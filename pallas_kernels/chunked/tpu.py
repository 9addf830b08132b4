"""TPU (Mosaic) runners of chunked recurrences (contract in :mod:`pallas_kernels.chunked`).

``sweep``: grid (batch, head, value block, chunk), the chunk axis sequential, the fp32 carry (a
``[K, block_v]`` slice where the sweep splits V, else all of it) in a VMEM scratch buffer; ``b [B, H, T]`` is passed as ``[B, H, N, C, 1]`` and ``[B, H, N, 1, C]`` so that both block
shapes are whole trailing dimensions, as Mosaic requires for a C that is not a multiple of 128.
``chunkwise``: grid (batch, head, chunk), all parallel, one whole ``[r, c]`` block per operand.

See docs/linear_attention.md#the-pallas-kernels.
"""

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.chunked.decay import ChunkDecay
from pallas_kernels.chunked.plans import ChunkwisePlan, SweepPlan


def _check_chunk_size(chunk_size: int, name: str) -> None:
    if chunk_size % 8:
        raise ValueError(f"{name} TPU kernel: chunk_size must be a multiple of 8, got {chunk_size}")


def _sweep_kernel(*refs, body, num_in, num_out, has_decay, chunk_size, history):
    seq_in, rest = refs[:num_in], refs[num_in:]
    decay = None
    if has_decay:
        col, row = rest[0][...], rest[1][...]
        decay = ChunkDecay(col, row, row[:, chunk_size - 1 : chunk_size])
        rest = rest[2:]
    carry_in, seq_out, rest = rest[0], rest[1 : 1 + num_out], rest[1 + num_out :]
    carry_out, rest = rest[0], rest[1:]
    history_out, carry = (rest[0], rest[1]) if history else (None, rest[0])
    step = pl.program_id(3)  # the chunk axis, after (batch, head, value block)

    @pl.when(step == 0)
    def _():
        carry[...] = carry_in[...]

    if history:
        history_out[...] = carry[...]
    outputs, new_carry = body([r[...] for r in seq_in], decay, carry[...])
    for ref, value in zip(seq_out, outputs):
        ref[...] = value.astype(ref.dtype)
    carry[...] = new_carry

    @pl.when(step == pl.num_programs(3) - 1)
    def _():
        carry_out[...] = new_carry


def _pad_columns(a: jax.Array, columns: int) -> jax.Array:
    if a.shape[-1] == columns:
        return a
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, columns - a.shape[-1])])


def sweep(plan: SweepPlan, seq_inputs: Sequence[jax.Array], b: Optional[jax.Array], carry: jax.Array, *,
          block_sizes, interpret: bool = False):
    """See :func:`pallas_kernels.chunked.sweep`; ``plan`` holds its options and geometry,
    ``block_sizes`` (resolved) its value block: where the sweep splits V, the value inputs and the
    carry are zero-padded to a multiple of ``block_v`` and the grid gains a parallel value axis
    before the chunk axis."""
    _check_chunk_size(plan.chunk_size, plan.name)
    size, num_chunks = plan.chunk_size, plan.num_chunks
    key_dim, value_dim = carry.shape[2:]
    block_v, num_value_blocks = plan.value_blocks(value_dim, block_sizes.block_v)
    padded_v = block_v * num_value_blocks
    chunk = (lambda n: num_chunks - 1 - n) if plan.reverse else (lambda n: n)

    def seq_spec(width, by_value):
        if by_value:
            return pl.BlockSpec((None, None, size, block_v), lambda i, j, c, n: (i, j, chunk(n), c))
        return pl.BlockSpec((None, None, size, width), lambda i, j, c, n: (i, j, chunk(n), 0))

    carry_spec = pl.BlockSpec((None, None, key_dim, block_v), lambda i, j, c, n: (i, j, 0, c))
    args = [_pad_columns(a, padded_v) if n in plan.value_inputs else a for n, a in enumerate(seq_inputs)]
    in_specs = [seq_spec(a.shape[-1], n in plan.value_inputs) for n, a in enumerate(seq_inputs)]
    if b is not None:
        chunks = b.reshape(plan.batch, plan.heads, num_chunks, size)
        args += [chunks[..., None], chunks[..., None, :]]
        in_specs += [
            pl.BlockSpec((None, None, None, size, 1), lambda i, j, c, n: (i, j, chunk(n), 0, 0)),
            pl.BlockSpec((None, None, None, 1, size), lambda i, j, c, n: (i, j, chunk(n), 0, 0)),
        ]
    widths = [padded_v if n in plan.value_outputs else w for n, w in enumerate(plan.out_widths)]
    out_specs = [seq_spec(w, n in plan.value_outputs) for n, w in enumerate(widths)] + [carry_spec]
    out_shape = [jax.ShapeDtypeStruct((plan.batch, plan.heads, plan.length, w), jnp.float32) for w in widths]
    out_shape.append(jax.ShapeDtypeStruct((plan.batch, plan.heads, key_dim, padded_v), jnp.float32))
    if plan.carry_history:
        out_specs.append(pl.BlockSpec((None, None, None, key_dim, block_v), lambda i, j, c, n: (i, j, chunk(n), 0, c)))
        out_shape.append(jax.ShapeDtypeStruct((plan.batch, plan.heads, num_chunks, key_dim, padded_v), jnp.float32))
    kernel = lambda *refs: _sweep_kernel(  # noqa: E731
        *refs, body=plan.body, num_in=len(seq_inputs), num_out=len(plan.out_widths), has_decay=b is not None,
        chunk_size=size, history=plan.carry_history,
    )
    results = pl.pallas_call(
        kernel,
        grid=(plan.batch, plan.heads, num_value_blocks, num_chunks),
        in_specs=in_specs + [carry_spec],
        out_specs=out_specs,
        out_shape=out_shape,
        scratch_shapes=[pltpu.VMEM((key_dim, block_v), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name=plan.kernel_name,
    )(*args, _pad_columns(carry.astype(jnp.float32), padded_v))
    outputs = [o[..., :w] for o, w in zip(results, plan.out_widths)]
    return (outputs, *(r[..., :value_dim] for r in results[len(plan.out_widths) :]))


def chunkwise(plan: ChunkwisePlan, inputs: Sequence[jax.Array], *, block_sizes=None, interpret: bool = False
              ) -> list[jax.Array]:
    """See :func:`pallas_kernels.chunked.chunkwise`; ``plan`` holds its options and geometry."""
    del block_sizes
    return list(pl.pallas_call(
        plan.kernel,
        grid=(plan.batch, plan.heads, plan.num_chunks),
        in_specs=[plan.block_spec(a.shape[3:]) for a in inputs],
        out_specs=[plan.block_spec(shape) for shape in plan.out_blocks],
        out_shape=[jax.ShapeDtypeStruct((plan.batch, plan.heads, plan.num_chunks, *shape), jnp.float32)
                   for shape in plan.out_blocks],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel")),
        interpret=interpret,
        name=plan.kernel_name,
    )(*inputs))

"""GPU (Triton backend) runners of chunked recurrences (contract in :mod:`pallas_kernels.chunked`).

``sweep``: one program per (batch, head), or per (batch, head, value block) where the sweep splits
V, loops over the chunks with the fp32 carry in registers.
``chunkwise``: one program per (batch, head, chunk). Triton blocks need power-of-two sizes of at
least 16, so every block axis wider than 1 is zero-padded to one (zero key and value columns add
nothing to any product) and the chunk size must be one; outputs are cut back.

See docs/linear_attention.md#the-pallas-kernels.
"""

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.chunked.decay import ChunkDecay
from pallas_kernels.chunked.plans import ChunkwisePlan, SweepPlan
from pallas_kernels.dot import fp32_algorithm
from pallas_kernels.platform import triton_fp32_dot

_MIN_BLOCK = 16


def _block_size(size: int) -> int:
    return size if size == 1 else max(_MIN_BLOCK, pl.next_power_of_2(size))


def _pad_last(a: jax.Array, axes: int = 1) -> jax.Array:
    pads = [(0, 0)] * (a.ndim - axes) + [(0, _block_size(n) - n) for n in a.shape[a.ndim - axes :]]
    return jnp.pad(a, pads)


def _check_chunk_size(chunk_size: int, name: str) -> None:
    if chunk_size < _MIN_BLOCK or chunk_size & (chunk_size - 1):
        raise ValueError(f"{name} Triton kernel: chunk_size must be a power of two >= 16, got {chunk_size}")


def _compiler_params(block_sizes) -> pltriton.CompilerParams:
    """Warps and stages of a resolved :class:`~pallas_kernels.chunked.block_sizes.ChunkedBlockSizes`
    (by default 1 stage, no multi-buffered loads, for fp32 heads wider than 64)."""
    return pltriton.CompilerParams(num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages)


def _sweep_kernel(*refs, body, num_in, num_out, has_decay, chunk_size, num_chunks, reverse, history):
    seq_in, rest = refs[:num_in], refs[num_in:]
    b_ref = None
    if has_decay:
        b_ref, rest = rest[0], rest[1:]
    carry_in, seq_out, carry_out = rest[0], rest[1 : 1 + num_out], rest[1 + num_out]
    history_out = rest[2 + num_out] if history else None
    carry_rows = carry_in.shape[0]

    def step(n, carry):
        chunk = num_chunks - 1 - n if reverse else n
        rows = pl.ds(pl.multiple_of(chunk * chunk_size, chunk_size), chunk_size)
        if history:
            history_out[pl.ds(pl.multiple_of(chunk * carry_rows, carry_rows), carry_rows), :] = carry
        decay = None
        if has_decay:
            b = b_ref[rows]
            decay = ChunkDecay(b[:, None], b[None, :], b_ref[chunk * chunk_size + chunk_size - 1])
        outputs, carry = body([r[rows, :] for r in seq_in], decay, carry)
        for ref, value in zip(seq_out, outputs):
            ref[rows, :] = value.astype(ref.dtype)
        return carry

    carry_out[...] = jax.lax.fori_loop(0, num_chunks, step, carry_in[...])


def sweep(plan: SweepPlan, seq_inputs: Sequence[jax.Array], b: Optional[jax.Array], carry: jax.Array, *,
          block_sizes, interpret: bool = False):
    """See :func:`pallas_kernels.chunked.sweep`; ``plan`` holds its options and geometry,
    ``block_sizes`` (resolved) its warps, stages and value block. Grid (batch, head, value block):
    V is padded to a power of two, which a (power of two) ``block_v`` below it divides."""
    _check_chunk_size(plan.chunk_size, plan.name)
    batch, heads, length, num_chunks = plan.batch, plan.heads, plan.length, plan.num_chunks
    padded_inputs = [_pad_last(a) for a in seq_inputs]
    padded_carry = _pad_last(carry.astype(jnp.float32), axes=2)
    carry_rows, carry_cols = padded_carry.shape[2:]
    block_v, num_value_blocks = plan.value_blocks(carry_cols, block_sizes.block_v)

    def seq_spec(width, by_value):
        if by_value:
            return pl.BlockSpec((None, None, length, block_v), lambda i, j, c: (i, j, 0, c))
        return pl.BlockSpec((None, None, length, width), lambda i, j, c: (i, j, 0, 0))

    carry_spec = pl.BlockSpec((None, None, carry_rows, block_v), lambda i, j, c: (i, j, 0, c))
    args = list(padded_inputs)
    in_specs = [seq_spec(a.shape[-1], n in plan.value_inputs) for n, a in enumerate(padded_inputs)]
    if b is not None:
        args.append(b)
        in_specs.append(pl.BlockSpec((None, None, length), lambda i, j, c: (i, j, 0)))
    widths = [_block_size(w) for w in plan.out_widths]
    out_specs = [seq_spec(w, n in plan.value_outputs) for n, w in enumerate(widths)] + [carry_spec]
    out_shape = [jax.ShapeDtypeStruct((batch, heads, length, w), jnp.float32) for w in widths]
    out_shape.append(jax.ShapeDtypeStruct(padded_carry.shape, jnp.float32))
    if plan.carry_history:  # the carries stacked along rows: [B, H, N * K, V]
        out_specs.append(pl.BlockSpec((None, None, num_chunks * carry_rows, block_v), lambda i, j, c: (i, j, 0, c)))
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, num_chunks * carry_rows, carry_cols), jnp.float32))
    kernel = lambda *refs: _sweep_kernel(  # noqa: E731
        *refs, body=plan.body, num_in=len(seq_inputs), num_out=len(plan.out_widths), has_decay=b is not None,
        chunk_size=plan.chunk_size, num_chunks=num_chunks, reverse=plan.reverse, history=plan.carry_history,
    )
    with fp32_algorithm(triton_fp32_dot(interpret)):
        results = pl.pallas_call(
            kernel,
            grid=(batch, heads, num_value_blocks),
            in_specs=in_specs + [carry_spec],
            out_specs=out_specs,
            out_shape=out_shape,
            compiler_params=_compiler_params(block_sizes),
            interpret=interpret,
            name=plan.kernel_name,
        )(*args, padded_carry)
    outputs = [o[..., :w] for o, w in zip(results, plan.out_widths)]
    key_dim, value_dim = carry.shape[2:]
    final = results[len(plan.out_widths)][..., :key_dim, :value_dim]
    if not plan.carry_history:
        return outputs, final
    history = results[len(plan.out_widths) + 1].reshape(batch, heads, num_chunks, carry_rows, carry_cols)
    return outputs, final, history[..., :key_dim, :value_dim]


def chunkwise(plan: ChunkwisePlan, inputs: Sequence[jax.Array], *, block_sizes, interpret: bool = False
              ) -> list[jax.Array]:
    """See :func:`pallas_kernels.chunked.chunkwise`; ``plan`` holds its options and geometry,
    ``block_sizes`` (resolved) its warps and stages."""
    padded = [_pad_last(a, axes=2) for a in inputs]
    padded_blocks = [tuple(_block_size(n) for n in shape) for shape in plan.out_blocks]
    with fp32_algorithm(triton_fp32_dot(interpret)):
        outputs = pl.pallas_call(
            plan.kernel,
            grid=(plan.batch, plan.heads, plan.num_chunks),
            in_specs=[plan.block_spec(a.shape[3:]) for a in padded],
            out_specs=[plan.block_spec(shape) for shape in padded_blocks],
            out_shape=[jax.ShapeDtypeStruct((plan.batch, plan.heads, plan.num_chunks, *shape), jnp.float32)
                       for shape in padded_blocks],
            compiler_params=_compiler_params(block_sizes),
            interpret=interpret,
            name=plan.kernel_name,
        )(*padded)
    return [o[..., :rows, :cols] for o, (rows, cols) in zip(outputs, plan.out_blocks)]

"""TPU (Mosaic) sweeps of chunked linear attention: grid (batch, head, chunk), the chunk axis
sequential, the fp32 ``[K, V]`` carry in a VMEM scratch buffer.

A sweep walks the chunks of every (batch, head) in order (or in reverse), calling a per-chunk
``body(blocks, decay, carry) -> (outputs, carry)`` from :mod:`.chunk_math`. Sequence arrays are
head-major ``[B, H, T, D]`` with T a multiple of the chunk size; ``b [B, H, T]`` is the in-chunk
cumulative log decay, passed as ``[B, H, N, C, 1]`` and ``[B, H, N, 1, C]`` so that both block
shapes are whole trailing dimensions, as Mosaic requires for a C that is not a multiple of 128.
"""

from collections.abc import Callable, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.linear_attention.chunk_math import ChunkDecay


def _kernel(*refs, body, num_in, num_out, has_decay, chunk_size):
    seq_in, rest = refs[:num_in], refs[num_in:]
    decay = None
    if has_decay:
        col, row = rest[0][...], rest[1][...]
        decay = ChunkDecay(col, row, row[:, chunk_size - 1 : chunk_size])
        rest = rest[2:]
    carry_in, seq_out, carry_out, carry = rest[0], rest[1 : 1 + num_out], rest[1 + num_out], rest[2 + num_out]
    step = pl.program_id(2)

    @pl.when(step == 0)
    def _():
        carry[...] = carry_in[...]

    outputs, new_carry = body([r[...] for r in seq_in], decay, carry[...])
    for ref, value in zip(seq_out, outputs):
        ref[...] = value.astype(ref.dtype)
    carry[...] = new_carry

    @pl.when(step == pl.num_programs(2) - 1)
    def _():
        carry_out[...] = new_carry


def sweep(
    body: Callable,
    seq_inputs: Sequence[jax.Array],
    b: Optional[jax.Array],
    carry: jax.Array,
    out_widths: Sequence[int],
    *,
    chunk_size: int,
    reverse: bool = False,
    interpret: bool = False,
) -> tuple[list[jax.Array], jax.Array]:
    """Runs ``body`` over the chunks; returns fp32 ``[B, H, T, w]`` outputs and the final carry ``[B, H, K, V]``."""
    batch, heads, length = seq_inputs[0].shape[:3]
    if chunk_size % 8:
        raise ValueError(f"linear attention TPU kernel: chunk_size must be a multiple of 8, got {chunk_size}")
    num_chunks = length // chunk_size
    chunk = (lambda n: num_chunks - 1 - n) if reverse else (lambda n: n)
    seq_spec = lambda width: pl.BlockSpec((None, None, chunk_size, width), lambda i, j, n: (i, j, chunk(n), 0))  # noqa: E731
    carry_spec = pl.BlockSpec((None, None, *carry.shape[2:]), lambda i, j, n: (i, j, 0, 0))
    args = list(seq_inputs)
    in_specs = [seq_spec(a.shape[-1]) for a in seq_inputs]
    if b is not None:
        chunks = b.reshape(batch, heads, num_chunks, chunk_size)
        args += [chunks[..., None], chunks[..., None, :]]
        in_specs += [
            pl.BlockSpec((None, None, None, chunk_size, 1), lambda i, j, n: (i, j, chunk(n), 0, 0)),
            pl.BlockSpec((None, None, None, 1, chunk_size), lambda i, j, n: (i, j, chunk(n), 0, 0)),
        ]
    kernel = lambda *refs: _kernel(  # noqa: E731
        *refs, body=body, num_in=len(seq_inputs), num_out=len(out_widths), has_decay=b is not None,
        chunk_size=chunk_size,
    )
    *outputs, final = pl.pallas_call(
        kernel,
        grid=(batch, heads, num_chunks),
        in_specs=in_specs + [carry_spec],
        out_specs=[seq_spec(w) for w in out_widths] + [carry_spec],
        out_shape=[jax.ShapeDtypeStruct((batch, heads, length, w), jnp.float32) for w in out_widths]
        + [jax.ShapeDtypeStruct(carry.shape, jnp.float32)],
        scratch_shapes=[pltpu.VMEM(carry.shape[2:], jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="linear_attention_sweep",
    )(*args, carry.astype(jnp.float32))
    return outputs, final

"""GPU (Triton backend) sweeps of chunked linear attention: one program per (batch, head) loops
over the chunks with the fp32 ``[K, V]`` carry in registers.

Same contract as :func:`pallas_kernels.linear_attention.tpu.sweep`. Triton blocks need
power-of-two sizes of at least 16, so head sizes are zero-padded to one (zero key and value
columns add nothing to any product) and the chunk size must be one.
"""

from collections.abc import Callable, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.dot import fp32_algorithm
from pallas_kernels.linear_attention.chunk_math import ChunkDecay
from pallas_kernels.platform import triton_fp32_dot, wide_fp32

_MIN_BLOCK = 16


def _block_size(size: int) -> int:
    return max(_MIN_BLOCK, pl.next_power_of_2(size))


def _pad_last(a: jax.Array, axes: int = 1) -> jax.Array:
    pads = [(0, 0)] * (a.ndim - axes) + [(0, _block_size(n) - n) for n in a.shape[a.ndim - axes :]]
    return jnp.pad(a, pads)


def _kernel(*refs, body, num_in, num_out, has_decay, chunk_size, num_chunks, reverse):
    seq_in, rest = refs[:num_in], refs[num_in:]
    b_ref = None
    if has_decay:
        b_ref, rest = rest[0], rest[1:]
    carry_in, seq_out, carry_out = rest[0], rest[1 : 1 + num_out], rest[1 + num_out]

    def step(n, carry):
        chunk = num_chunks - 1 - n if reverse else n
        rows = pl.ds(pl.multiple_of(chunk * chunk_size, chunk_size), chunk_size)
        decay = None
        if has_decay:
            b = b_ref[rows]
            decay = ChunkDecay(b[:, None], b[None, :], b_ref[chunk * chunk_size + chunk_size - 1])
        outputs, carry = body([r[rows, :] for r in seq_in], decay, carry)
        for ref, value in zip(seq_out, outputs):
            ref[rows, :] = value.astype(ref.dtype)
        return carry

    carry_out[...] = jax.lax.fori_loop(0, num_chunks, step, carry_in[...])


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
    num_warps: int = 4,
    num_stages: Optional[int] = None,
) -> tuple[list[jax.Array], jax.Array]:
    """Runs ``body`` over the chunks; returns fp32 ``[B, H, T, w]`` outputs and the final carry ``[B, H, K, V]``.

    ``num_stages`` None: 2, or 1 (no multi-buffered loads) for fp32 heads wider than 64, whose
    blocks would not fit in shared memory."""
    batch, heads, length = seq_inputs[0].shape[:3]
    if chunk_size < _MIN_BLOCK or chunk_size & (chunk_size - 1):
        raise ValueError(f"linear attention Triton kernel: chunk_size must be a power of two >= 16, got {chunk_size}")
    if num_stages is None:
        num_stages = 1 if wide_fp32(seq_inputs) else 2
    padded_inputs = [_pad_last(a) for a in seq_inputs]
    padded_carry = _pad_last(carry.astype(jnp.float32), axes=2)
    seq_spec = lambda width: pl.BlockSpec((None, None, length, width), lambda i, j: (i, j, 0, 0))  # noqa: E731
    carry_spec = pl.BlockSpec((None, None, *padded_carry.shape[2:]), lambda i, j: (i, j, 0, 0))
    args = list(padded_inputs)
    in_specs = [seq_spec(a.shape[-1]) for a in padded_inputs]
    if b is not None:
        args.append(b)
        in_specs.append(pl.BlockSpec((None, None, length), lambda i, j: (i, j, 0)))
    widths = [_block_size(w) for w in out_widths]
    kernel = lambda *refs: _kernel(  # noqa: E731
        *refs, body=body, num_in=len(seq_inputs), num_out=len(out_widths), has_decay=b is not None,
        chunk_size=chunk_size, num_chunks=length // chunk_size, reverse=reverse,
    )
    with fp32_algorithm(triton_fp32_dot(interpret)):
        *outputs, final = pl.pallas_call(
            kernel,
            grid=(batch, heads),
            in_specs=in_specs + [carry_spec],
            out_specs=[seq_spec(w) for w in widths] + [carry_spec],
            out_shape=[jax.ShapeDtypeStruct((batch, heads, length, w), jnp.float32) for w in widths]
            + [jax.ShapeDtypeStruct(padded_carry.shape, jnp.float32)],
            compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
            interpret=interpret,
            name="linear_attention_sweep",
        )(*args, padded_carry)
    outputs = [o[..., :w] for o, w in zip(outputs, out_widths)]
    return outputs, final[..., : carry.shape[2], : carry.shape[3]]

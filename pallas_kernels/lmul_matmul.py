"""Bitwise L-Matmul ``C[g] = sum_k L-Mul(A[g, :, k], B[g, k, :])`` (fp32 accumulation) as Pallas
kernels for TPU (Mosaic) and GPU (Triton backend).

The operands arrive as uint32 (sign, magnitude) fields of their format, already rounded to m
mantissa bits (:mod:`pallas_kernels.lmul_bits`), so the kernels need 32-bit integer arithmetic
only. A block multiplies ``a [k, bm, 1]`` by ``b [k, 1, bn]`` (A is passed transposed, as
``[G, K, M, 1]``, B as ``[G, K, 1, N]``): the products ``[k, bm, bn]`` are formed by the integer
adder, widened to fp32 and summed over the leading axis. TPU: grid (G, M/bm, N/bn, K/bk) with the
K axis sequential and an fp32 VMEM accumulator; Triton: grid (G, M/bm, N/bn), a loop over K.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from pallas_kernels import lmul_bits
from pallas_kernels.platform import run_on_platform

# (bm, bn, bk) per backend: TPU tiles are (8, 128)-aligned; Triton blocks stay small enough for
# the [bk, bm, bn] integer products to live in registers.
TPU_BLOCKS = (128, 128, 8)
TRITON_BLOCKS = (32, 32, 4)


def _block_sum(a_sign, a_mag, b_sign, b_mag, fmt, l):  # noqa: E741
    sign, magnitude = lmul_bits.bitwise_product(a_sign, a_mag, b_sign, b_mag, fmt, l)
    return jnp.sum(lmul_bits.to_float32(sign, magnitude, fmt), axis=0)


def _tpu_kernel(a_sign, a_mag, b_sign, b_mag, out_ref, acc_ref, *, fmt, l):  # noqa: E741
    @pl.when(pl.program_id(3) == 0)
    def _():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    acc_ref[...] += _block_sum(a_sign[...], a_mag[...], b_sign[...], b_mag[...], fmt, l)

    @pl.when(pl.program_id(3) == pl.num_programs(3) - 1)
    def _():
        out_ref[...] = acc_ref[...]


def _tpu(a_sign, a_mag, b_sign, b_mag, *, fmt, l, interpret):  # noqa: E741
    groups, depth, rows, _ = a_sign.shape
    cols = b_sign.shape[-1]
    bm, bn, bk = min(TPU_BLOCKS[0], rows), min(TPU_BLOCKS[1], cols), TPU_BLOCKS[2]
    a_spec = pl.BlockSpec((None, bk, bm, 1), lambda g, i, j, k: (g, k, i, 0))
    b_spec = pl.BlockSpec((None, bk, 1, bn), lambda g, i, j, k: (g, k, 0, j))
    return pl.pallas_call(
        functools.partial(_tpu_kernel, fmt=fmt, l=l),
        grid=(groups, rows // bm, cols // bn, depth // bk),
        in_specs=[a_spec, a_spec, b_spec, b_spec],
        out_specs=pl.BlockSpec((None, bm, bn), lambda g, i, j, k: (g, i, j)),
        out_shape=jax.ShapeDtypeStruct((groups, rows, cols), jnp.float32),
        scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="lmul_matmul",
    )(a_sign, a_mag, b_sign, b_mag)


def _triton_kernel(a_sign, a_mag, b_sign, b_mag, out_ref, *, fmt, l, depth, bk):  # noqa: E741
    def step(k, acc):
        rows = pl.ds(pl.multiple_of(k * bk, bk), bk)
        return acc + _block_sum(a_sign[rows, :, :], a_mag[rows, :, :], b_sign[rows, :, :], b_mag[rows, :, :], fmt, l)

    out_ref[...] = jax.lax.fori_loop(0, depth // bk, step, jnp.zeros(out_ref.shape, jnp.float32))


def _triton(a_sign, a_mag, b_sign, b_mag, *, fmt, l, interpret):  # noqa: E741
    groups, depth, rows, _ = a_sign.shape
    cols = b_sign.shape[-1]
    bm, bn, bk = TRITON_BLOCKS
    a_spec = pl.BlockSpec((None, depth, bm, 1), lambda g, i, j: (g, 0, i, 0))
    b_spec = pl.BlockSpec((None, depth, 1, bn), lambda g, i, j: (g, 0, 0, j))
    return pl.pallas_call(
        functools.partial(_triton_kernel, fmt=fmt, l=l, depth=depth, bk=bk),
        grid=(groups, rows // bm, cols // bn),
        in_specs=[a_spec, a_spec, b_spec, b_spec],
        out_specs=pl.BlockSpec((None, bm, bn), lambda g, i, j: (g, i, j)),
        out_shape=jax.ShapeDtypeStruct((groups, rows, cols), jnp.float32),
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="lmul_matmul",
    )(a_sign, a_mag, b_sign, b_mag)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def lmul_matmul(a: jax.Array, b: jax.Array, *, l: int) -> jax.Array:  # noqa: E741
    """``[G, M, K] x [G, K, N] -> [G, M, N]`` fp32; ``a`` and ``b`` of one L-Mul format, already
    rounded to their m mantissa bits (subnormals flushed); ``l`` of the offset ``2^{-l}``."""
    fmt = lmul_bits.float_format(a.dtype)
    groups, rows, depth = a.shape
    cols = b.shape[-1]
    # Pad every axis to a multiple of both backends' blocks (zeros absorb: padding adds nothing).
    padded_rows = _round_up(rows, TPU_BLOCKS[0]) if rows > TPU_BLOCKS[0] else _round_up(rows, TRITON_BLOCKS[0])
    padded_cols = _round_up(cols, TPU_BLOCKS[1]) if cols > TPU_BLOCKS[1] else _round_up(cols, TRITON_BLOCKS[1])
    padded_depth = _round_up(depth, TPU_BLOCKS[2])
    a = jnp.pad(a, ((0, 0), (0, padded_rows - rows), (0, padded_depth - depth)))
    b = jnp.pad(b, ((0, 0), (0, padded_depth - depth), (0, padded_cols - cols)))
    a_sign, a_mag = (f.transpose(0, 2, 1)[..., None] for f in lmul_bits.fields(a))  # [G, K, M, 1]
    b_sign, b_mag = (f[:, :, None, :] for f in lmul_bits.fields(b))  # [G, K, 1, N]
    options = dict(fmt=fmt, l=l)
    out = run_on_platform(
        a_sign, a_mag, b_sign, b_mag,
        tpu=functools.partial(_tpu, **options), gpu=functools.partial(_triton, **options),
    )
    return out[:, :rows, :cols]

"""Bitwise L-Matmul ``C[g] = sum_k L-Mul(A[g, :, k], B[g, k, :])`` (fp32 accumulation) as Pallas
kernels for TPU (Mosaic) and GPU (Triton backend).

The operands arrive as :class:`pallas_kernels.lmul_bits.MatmulOperand` fields (fp32 sign and
magnitude bits as uint32, and a live mask), so the kernels need 32-bit integer arithmetic only. A
block multiplies ``a [k, bm, 1]`` by ``b [k, 1, bn]`` (A is passed transposed, as ``[G, K, M, 1]``,
B as ``[G, K, 1, N]``): the products ``[k, bm, bn]`` are formed by the integer adder
(:func:`pallas_kernels.lmul_bits.product_values`) and summed over the leading axis. Products with
Inf or NaN operands contribute 0 here; :func:`pallas_kernels.lmul_bits.special_products` adds them. TPU: grid (G, M/bm, N/bn, K/bk) with the
K axis sequential and an fp32 VMEM accumulator; Triton: grid (G, M/bm, N/bn), a loop over K.
Tile sizes: :class:`LMulBlockSizes`.

See docs/lmul.md#the-l-matmul.
"""

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from pallas_kernels import lmul_bits
from pallas_kernels.block_sizes import POWER_OF_TWO, KernelBlockSizes, multiple_of, round_up
from pallas_kernels.platform import Interpret, run_on_platform


@dataclasses.dataclass(frozen=True)
class LMulBlockSizes(KernelBlockSizes):
    """Output block ``block_m x block_n`` and the ``block_k`` products summed per step.

    TPU: ``block_m`` a multiple of 8 (sublanes), ``block_n`` of 128 (lanes); ``block_m`` and
    ``block_n`` are clamped to a shorter (padded) matrix. Triton: powers of two, small enough for the
    ``[bk, bm, bn]`` integer products to live in registers, and ``num_warps``, ``num_stages``.
    Defaults: TPU 128 x 128 x 8; Triton 32 x 32 x 4 with 4 warps and 2 stages.

    Example::

        LMulBlockSizes("triton", block_m=16, block_n=64, block_k=2)
    """

    block_m: Optional[int] = None
    block_n: Optional[int] = None
    block_k: Optional[int] = None
    num_warps: Optional[int] = None
    num_stages: Optional[int] = None

    RULES = {
        "block_m": {"tpu": (multiple_of(8),), "triton": (POWER_OF_TWO,)},
        "block_n": {"tpu": (multiple_of(128),), "triton": (POWER_OF_TWO,)},
        "block_k": {"tpu": (), "triton": (POWER_OF_TWO,)},
    }
    DEFAULTS = {
        "tpu": {None: dict(block_m=128, block_n=128, block_k=8)},
        "triton": {None: dict(block_m=32, block_n=32, block_k=4, num_warps=4, num_stages=2)},
    }


def _block_sum(a_fields, b_fields, fmt):
    a, b = lmul_bits.MatmulOperand(*a_fields), lmul_bits.MatmulOperand(*b_fields)
    return jnp.sum(lmul_bits.product_values(a, b, fmt), axis=0)


def _tpu_kernel(*refs, fmt):
    a_refs, b_refs, out_ref, acc_ref = refs[:3], refs[3:6], refs[6], refs[7]

    @pl.when(pl.program_id(3) == 0)
    def _():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    acc_ref[...] += _block_sum([r[...] for r in a_refs], [r[...] for r in b_refs], fmt)

    @pl.when(pl.program_id(3) == pl.num_programs(3) - 1)
    def _():
        out_ref[...] = acc_ref[...]


def _tpu(a_fields, b_fields, *, fmt, block_sizes, interpret):
    groups, depth, rows, _ = a_fields[0].shape
    cols = b_fields[0].shape[-1]
    bm, bn, bk = min(block_sizes.block_m, rows), min(block_sizes.block_n, cols), block_sizes.block_k
    a_spec = pl.BlockSpec((None, bk, bm, 1), lambda g, i, j, k: (g, k, i, 0))
    b_spec = pl.BlockSpec((None, bk, 1, bn), lambda g, i, j, k: (g, k, 0, j))
    return pl.pallas_call(
        functools.partial(_tpu_kernel, fmt=fmt),
        grid=(groups, rows // bm, cols // bn, depth // bk),
        in_specs=[a_spec] * 3 + [b_spec] * 3,
        out_specs=pl.BlockSpec((None, bm, bn), lambda g, i, j, k: (g, i, j)),
        out_shape=jax.ShapeDtypeStruct((groups, rows, cols), jnp.float32),
        scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="lmul_matmul",
    )(*a_fields, *b_fields)


def _triton_kernel(*refs, fmt, depth, bk):
    a_refs, b_refs, out_ref = refs[:3], refs[3:6], refs[6]

    def step(k, acc):
        rows = pl.ds(pl.multiple_of(k * bk, bk), bk)
        return acc + _block_sum([r[rows, :, :] for r in a_refs], [r[rows, :, :] for r in b_refs], fmt)

    out_ref[...] = jax.lax.fori_loop(0, depth // bk, step, jnp.zeros(out_ref.shape, jnp.float32))


def _triton(a_fields, b_fields, *, fmt, block_sizes, interpret):
    groups, depth, rows, _ = a_fields[0].shape
    cols = b_fields[0].shape[-1]
    bm, bn, bk = block_sizes.block_m, block_sizes.block_n, block_sizes.block_k
    a_spec = pl.BlockSpec((None, depth, bm, 1), lambda g, i, j: (g, 0, i, 0))
    b_spec = pl.BlockSpec((None, depth, 1, bn), lambda g, i, j: (g, 0, 0, j))
    return pl.pallas_call(
        functools.partial(_triton_kernel, fmt=fmt, depth=depth, bk=bk),
        grid=(groups, rows // bm, cols // bn),
        in_specs=[a_spec] * 3 + [b_spec] * 3,
        out_specs=pl.BlockSpec((None, bm, bn), lambda g, i, j: (g, i, j)),
        out_shape=jax.ShapeDtypeStruct((groups, rows, cols), jnp.float32),
        compiler_params=pltriton.CompilerParams(num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages),
        interpret=interpret,
        name="lmul_matmul",
    )(*a_fields, *b_fields)


def _padded(size: int, tpu_block: int, triton_block: int) -> int:
    """A multiple of the Triton block that the TPU block divides once clamped to it: the TPU block
    covers the whole of a short axis."""
    padded = round_up(size, triton_block)
    return padded if padded <= tpu_block else round_up(size, math.lcm(tpu_block, triton_block))


def lmul_matmul(a: jax.Array, b: jax.Array, *, l: int, block_sizes=None,  # noqa: E741
                interpret: Interpret = None) -> jax.Array:
    """``[G, M, K] x [G, K, N] -> [G, M, N]`` fp32 sums of the live products (Inf and NaN operands
    add nothing here); ``a`` and ``b`` of one L-Mul format, already rounded to their m mantissa bits
    (subnormals flushed); ``l`` of the offset ``2^{-l}``. ``block_sizes``: an :class:`LMulBlockSizes`,
    one per platform, or None (the defaults); ``interpret``: see
    :func:`pallas_kernels.platform.interpreter_mode`."""
    fmt = lmul_bits.float_format(a.dtype)
    groups, rows, depth = a.shape
    cols = b.shape[-1]
    block_sizes = LMulBlockSizes.tuned(block_sizes, "lmul_dot_general", a.dtype, groups=groups, rows=rows,
                                       depth=depth, cols=cols)
    tpu_sizes, triton_sizes = LMulBlockSizes.for_each_platform(block_sizes, a.dtype)
    # Pad every axis to a multiple of both backends' blocks (padding is not live: adds nothing).
    padded_rows = _padded(rows, tpu_sizes.block_m, triton_sizes.block_m)
    padded_cols = _padded(cols, tpu_sizes.block_n, triton_sizes.block_n)
    padded_depth = round_up(depth, math.lcm(tpu_sizes.block_k, triton_sizes.block_k))
    a = jnp.pad(a, ((0, 0), (0, padded_rows - rows), (0, padded_depth - depth)))
    b = jnp.pad(b, ((0, 0), (0, padded_depth - depth), (0, padded_cols - cols)))
    a_fields = [f.transpose(0, 2, 1)[..., None] for f in lmul_bits.matmul_operand(a, l, right=False)]  # [G, K, M, 1]
    b_fields = [f[:, :, None, :] for f in lmul_bits.matmul_operand(b, l, right=True)]  # [G, K, 1, N]
    out = run_on_platform(
        a_fields, b_fields, tpu=functools.partial(_tpu, fmt=fmt, block_sizes=tpu_sizes),
        gpu=functools.partial(_triton, fmt=fmt, block_sizes=triton_sizes), interpret=interpret,
    )
    return out[:, :rows, :cols]

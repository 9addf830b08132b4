"""L-Matmul: matrix products whose element products are L-Mul (:mod:`jaxattn.ops.lmul`), summed in fp32.

:func:`lmul_dot_general` has the signature of :func:`jax.lax.dot_general`, so Flax's ``Dense``,
``DenseGeneral`` and ``Einsum`` take it as ``dot_general=functools.partial(lmul_dot_general,
mantissa_bits=3)``. Every contraction is brought to a batched ``[G, M, K] x [G, K, N]`` product:

  * ``semantics="formula"``: the identity ``L-Mul(x, y) = x p(y) + p(x) y + (2^{-l} - 1) p(x) p(y)``
    (``p(v) = sign(v) 2^{floor(log2 |v|)}``) makes the product ordinary matrix products: three, or
    two as ``A p(B) + p(A) (B + (2^{-l} - 1) p(B))`` (each element product exact in fp32 before the sum).
  * ``semantics="bitwise"``: element products by the integer adder, as K rank-1 updates of the
    ``[G, M, N]`` accumulator (``impl="xla"``: memory of the output only), or the Pallas kernel.

``impl="reference"`` is the definition itself: every element product by the float64 reference of
:func:`jaxattn.ops.lmul` (``[G, M, K, N]`` of them, the test oracle), summed in fp32.

The gradient is straight-through by default (that of the exact product: ``dA = G B^T``,
``dB = A^T G``, ordinary matmuls), or ``backward="lmul"``: those two products as L-Matmuls.

See docs/lmul.md#the-l-matmul.
"""

import functools
import math

import jax
import jax.numpy as jnp

from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.lmul import BACKWARDS, lmul_forward, validate_arguments
from pallas_kernels.lmul_bits import (
    U32, MatmulOperand, fields, float_format, matmul_operand, offset_exponent, power_of_two_part, prepare_operand,
    product_values, special_products,
)
from pallas_kernels.lmul_matmul import lmul_matmul as pallas_lmul_matmul

_HIGHEST = jax.lax.Precision.HIGHEST
_UNROLL = 4  # rank-1 updates per loop step of the bitwise XLA path


def _formula_matmul(a, b, mantissa_bits, offset):
    """``A p(B) + p(A) B + (2^{-l} - 1) p(A) p(B) = A p(B) + p(A) (B + (2^{-l} - 1) p(B))``: two matrix
    products, fp32 (``B + (2^{-l} - 1) p(B) = (y_m + 2^{-l}) p(B)`` is exact). Element products keep
    fp32's exponent range: for fp16/fp8 operands, products beyond the format's range are not flushed
    or saturated as the element-wise formula does."""
    l = offset_exponent(mantissa_bits, offset)  # noqa: E741
    a, b = (prepare_operand(x, mantissa_bits).astype(jnp.float32) for x in (a, b))
    pa, pb = power_of_two_part(a), power_of_two_part(b)
    return jnp.matmul(a, pb, precision=_HIGHEST) + jnp.matmul(pa, b + (2.0**-l - 1.0) * pb, precision=_HIGHEST)


def _bitwise_matmul_xla(a, b, l, unroll: int = _UNROLL):  # noqa: E741
    """``sum_k L-Mul(a[g, m, k], b[g, k, n])`` of live products as K rank-1 updates of an fp32
    ``[G, M, N]`` accumulator, ``unroll`` per loop step (one fused element-wise loop each: a
    reduction over a short k axis vectorises far worse on CPU)."""
    groups, rows, depth = a.shape
    pad = -depth % unroll
    x = MatmulOperand(*(jnp.pad(f, ((0, 0), (0, 0), (0, pad))) for f in matmul_operand(a, l, right=False)))
    y = MatmulOperand(*(jnp.pad(f, ((0, 0), (0, pad), (0, 0))) for f in matmul_operand(b, l, right=True)))
    fmt = float_format(a.dtype)

    def add_updates(i, total):
        for j in range(unroll):
            k = i * unroll + j
            column = MatmulOperand(*(jax.lax.dynamic_index_in_dim(f, k, axis=2, keepdims=True) for f in x))  # [G, M, 1]
            row = MatmulOperand(*(jax.lax.dynamic_index_in_dim(f, k, axis=1, keepdims=True) for f in y))  # [G, 1, N]
            total = total + product_values(column, row, fmt)
        return total

    return jax.lax.fori_loop(0, (depth + pad) // unroll, add_updates, jnp.zeros((groups, rows, b.shape[-1]), jnp.float32))


def _with_special_products(out, a, b):
    """Adds what Inf and NaN operands contribute; the indicator products run only if there are any."""
    fmt = float_format(a.dtype)
    special = lambda x: jnp.any(fields(x)[1] >= U32(fmt.inf))  # noqa: E731  (Inf or NaN, every format)
    matmul = lambda p, q: jnp.matmul(p, q, precision=_HIGHEST)  # noqa: E731
    return jax.lax.cond(special(a) | special(b), lambda: out + special_products(a, b, matmul), lambda: out)


def _reference_matmul(a, b, mantissa_bits, semantics, offset):
    """``sum_k L-Mul(a[g, m, k], b[g, k, n])``: every element product by the float64 reference L-Mul
    (:func:`jaxattn.ops.lmul` with ``impl="reference"``) in the operands' format, summed in fp32 (Inf
    and NaN as the element-wise L-Mul has them)."""
    products = lmul_forward(a[..., None], b[:, None], mantissa_bits=mantissa_bits, semantics=semantics, offset=offset,
                            impl="reference")
    return jnp.sum(products.astype(jnp.float32), axis=2)


def _fast_matmul(a, b, mantissa_bits, semantics, offset, *, bitwise_matmul):
    """The xla and pallas paths: the formula as ordinary matrix products (:func:`_formula_matmul`, on
    both), the bitwise product by ``bitwise_matmul(a, b, l)`` on the prepared operands, plus what
    Inf and NaN operands contribute."""
    if semantics == "formula":
        return _formula_matmul(a, b, mantissa_bits, offset)
    l = offset_exponent(mantissa_bits, offset)  # noqa: E741
    a, b = prepare_operand(a, mantissa_bits), prepare_operand(b, mantissa_bits)
    return _with_special_products(bitwise_matmul(a, b, l), a, b)


def _pallas_matmul(a, b, mantissa_bits, semantics, offset, block_sizes=None, interpret=None):
    """:func:`_fast_matmul` with the bitwise product by the Pallas kernel."""
    bitwise_matmul = functools.partial(pallas_lmul_matmul, block_sizes=block_sizes, interpret=interpret)
    return _fast_matmul(a, b, mantissa_bits, semantics, offset,
                        bitwise_matmul=lambda a, b, l: bitwise_matmul(a, b, l=l))  # noqa: E741


_IMPLEMENTATIONS = {
    "reference": _reference_matmul,
    "xla": functools.partial(_fast_matmul, bitwise_matmul=_bitwise_matmul_xla),
    "pallas": _pallas_matmul,
}


def _matmul_forward(a, b, options):
    mantissa_bits, semantics, offset, backward, implementation = options
    return implementation(a, b, mantissa_bits, semantics, offset)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(a, b, options):
    return _matmul_forward(a, b, options)


def _matmul_fwd(a, b, options):
    return _matmul_forward(a, b, options), (a, b)


def _matmul_bwd(options, residuals, g):
    a, b = residuals
    backward = options[3]
    if backward == "lmul":
        da = _matmul_forward(g.astype(a.dtype), jnp.swapaxes(b, 1, 2), options)
        db = _matmul_forward(jnp.swapaxes(a, 1, 2), g.astype(b.dtype), options)
    else:
        da = jnp.matmul(g, jnp.swapaxes(b, 1, 2).astype(g.dtype), precision=_HIGHEST)
        db = jnp.matmul(jnp.swapaxes(a, 1, 2).astype(g.dtype), g, precision=_HIGHEST)
    return da.astype(a.dtype), db.astype(b.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def lmul_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers,
    precision=None,
    preferred_element_type=None,
    *,
    mantissa_bits: int = 3,
    semantics: str = "bitwise",
    offset: str = "paper",
    backward: str = "straight_through",
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
    out_sharding=None,
) -> jax.Array:
    """:func:`jax.lax.dot_general` with L-Mul element products and fp32 accumulation.

    The operands are promoted to one floating format, in which the L-Mul happens (fp32, bf16,
    fp16 or fp8); ``precision`` and ``out_sharding`` are accepted for signature compatibility and
    ignored. The result has ``preferred_element_type``, else the operands' dtype.

    Args:
      lhs, rhs, dimension_numbers: as :func:`jax.lax.dot_general` (any batch and contracting axes).
      mantissa_bits, semantics, offset, backward: as :func:`jaxattn.ops.lmul`.
      impl: ``"reference"`` (every element product by the float64 reference of
        :func:`jaxattn.ops.lmul`, memory ``G M K N``), ``"xla"``, ``"pallas"`` (the kernel for
        ``semantics="bitwise"``; the formula is matrix products on every path but the reference) or
        ``"auto"`` (pallas on GPU and TPU).
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``LMulBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).

    Example::

        a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
        c = lmul_dot_general(a, b, (((1,), (0,)), ((), ())), mantissa_bits=3)  # [8, 4]
        dense = nn.Dense(4, dot_general=functools.partial(lmul_dot_general, mantissa_bits=3))
    """
    del precision, out_sharding
    if backward not in BACKWARDS:
        raise ValueError(f"lmul_dot_general: backward={backward!r} is not one of {BACKWARDS}")
    implementation = resolve_impl("lmul_dot_general", impl, _IMPLEMENTATIONS,
                                  pallas_options=dict(block_sizes=block_sizes, interpret=interpret))
    dtype = jnp.result_type(lhs, rhs)
    lhs, rhs = jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype)
    validate_arguments(lhs, rhs, mantissa_bits, semantics, offset, "lmul_dot_general")
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_free = [d for d in range(lhs.ndim) if d not in (*lhs_contract, *lhs_batch)]
    rhs_free = [d for d in range(rhs.ndim) if d not in (*rhs_contract, *rhs_batch)]
    size = lambda x, dims: math.prod(x.shape[d] for d in dims)  # noqa: E731
    batch_shape = [lhs.shape[d] for d in lhs_batch]
    groups, rows, depth, cols = size(lhs, lhs_batch), size(lhs, lhs_free), size(lhs, lhs_contract), size(rhs, rhs_free)
    a = jnp.transpose(lhs, (*lhs_batch, *lhs_free, *lhs_contract)).reshape(groups, rows, depth)
    b = jnp.transpose(rhs, (*rhs_batch, *rhs_contract, *rhs_free)).reshape(groups, depth, cols)
    out = _matmul(a, b, (mantissa_bits, semantics, offset, backward, implementation))
    out = out.reshape(*batch_shape, *[lhs.shape[d] for d in lhs_free], *[rhs.shape[d] for d in rhs_free])
    return out.astype(preferred_element_type or dtype)

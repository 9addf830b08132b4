"""L-Matmul: matrix products whose element products are L-Mul (:mod:`jaxattn.ops.lmul`), summed in fp32.

:func:`lmul_dot_general` has the signature of :func:`jax.lax.dot_general`, so Flax's ``Dense``,
``DenseGeneral`` and ``Einsum`` take it as ``dot_general=functools.partial(lmul_dot_general,
mantissa_bits=3)``. Every contraction is brought to a batched ``[G, M, K] x [G, K, N]`` product:

  * ``semantics="formula"``: the identity ``L-Mul(x, y) = x p(y) + p(x) y + (2^{-l} - 1) p(x) p(y)``
    (``p(v) = sign(v) 2^{floor(log2 |v|)}``) makes the product three ordinary matrix products (each
    element product exact in fp32 before the sum).
  * ``semantics="bitwise"``: element products by the integer adder, over blocks of K so that the
    ``[G, M, k, N]`` products stay under ``block_bytes`` (``impl="xla"``), or the Pallas kernel.

The gradient is straight-through by default (that of the exact product: ``dA = G B^T``,
``dB = A^T G``, ordinary matmuls), or ``backward="lmul"``: those two products as L-Matmuls.
"""

import functools
import math

import jax
import jax.numpy as jnp

from jaxattn.ops.lmul import BACKWARDS, lmul_forward, validate_arguments
from pallas_kernels.lmul_bits import flush_subnormals, offset_exponent, power_of_two_part, round_mantissa
from pallas_kernels.lmul_matmul import lmul_matmul as pallas_lmul_matmul

_HIGHEST = jax.lax.Precision.HIGHEST


def _prepare(x: jax.Array, mantissa_bits: int) -> jax.Array:
    return round_mantissa(flush_subnormals(x), mantissa_bits)


def _formula_matmul(a, b, mantissa_bits, offset):
    """Three matrix products: ``A p(B) + p(A) B + (2^{-l} - 1) p(A) p(B)``, fp32."""
    l = offset_exponent(mantissa_bits, offset)  # noqa: E741
    a, b = _prepare(a, mantissa_bits), _prepare(b, mantissa_bits)
    pa, pb = power_of_two_part(a), power_of_two_part(b)
    mm = lambda x, y: jnp.matmul(x.astype(jnp.float32), y.astype(jnp.float32), precision=_HIGHEST)  # noqa: E731
    return mm(a, pb) + mm(pa, b) + (2.0**-l - 1.0) * mm(pa, pb)


def _bitwise_matmul_xla(a, b, mantissa_bits, offset, block_bytes):
    """``sum_k L-Mul(a[g, m, k], b[g, k, n])`` over blocks of K, fp32 accumulation."""
    groups, rows, depth = a.shape
    cols = b.shape[-1]
    block = int(max(1, min(depth, block_bytes // max(1, 4 * groups * rows * cols))))
    pad = -depth % block
    a = jnp.pad(a, ((0, 0), (0, 0), (0, pad)))  # zeros absorb: padded terms add 0
    b = jnp.pad(b, ((0, 0), (0, pad), (0, 0)))
    product = functools.partial(lmul_forward, mantissa_bits=mantissa_bits, semantics="bitwise", offset=offset)

    def add_block(i, total):
        a_block = jax.lax.dynamic_slice_in_dim(a, i * block, block, axis=2)
        b_block = jax.lax.dynamic_slice_in_dim(b, i * block, block, axis=1)
        terms = product(a_block[:, :, :, None], b_block[:, None, :, :])  # [G, M, k, N]
        return total + jnp.sum(terms.astype(jnp.float32), axis=2)

    return jax.lax.fori_loop(0, (depth + pad) // block, add_block, jnp.zeros((groups, rows, cols), jnp.float32))


def _matmul_forward(a, b, options):
    mantissa_bits, semantics, offset, backward, impl, block_bytes = options
    if semantics == "formula":
        return _formula_matmul(a, b, mantissa_bits, offset)
    if impl == "pallas":
        l = offset_exponent(mantissa_bits, offset)  # noqa: E741
        return pallas_lmul_matmul(_prepare(a, mantissa_bits), _prepare(b, mantissa_bits), l=l)
    return _bitwise_matmul_xla(a, b, mantissa_bits, offset, block_bytes)


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
IMPLS = ("auto", "xla", "pallas")


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
    impl: str = "auto",
    block_bytes: int = 2**27,
    out_sharding=None,
) -> jax.Array:
    """:func:`jax.lax.dot_general` with L-Mul element products and fp32 accumulation.

    The operands are promoted to one floating format, in which the L-Mul happens (fp32, bf16,
    fp16 or fp8); ``precision`` and ``out_sharding`` are accepted for signature compatibility and
    ignored. The result has ``preferred_element_type``, else the operands' dtype.
    ``impl``: ``"xla"``, ``"pallas"`` (bitwise only) or ``"auto"`` (pallas on GPU/TPU).
    """
    del precision, out_sharding
    if backward not in BACKWARDS:
        raise ValueError(f"lmul_dot_general: backward={backward!r} is not one of {BACKWARDS}")
    if impl not in IMPLS:
        raise ValueError(f"lmul_dot_general: impl={impl!r} is not one of {IMPLS}")
    dtype = jnp.result_type(lhs, rhs)
    lhs, rhs = jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype)
    validate_arguments(lhs, rhs, mantissa_bits, semantics, offset, "lmul_dot_general")
    if impl == "auto":
        impl = "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_free = [d for d in range(lhs.ndim) if d not in (*lhs_contract, *lhs_batch)]
    rhs_free = [d for d in range(rhs.ndim) if d not in (*rhs_contract, *rhs_batch)]
    size = lambda x, dims: math.prod(x.shape[d] for d in dims)  # noqa: E731
    batch_shape = [lhs.shape[d] for d in lhs_batch]
    groups, rows, depth, cols = size(lhs, lhs_batch), size(lhs, lhs_free), size(lhs, lhs_contract), size(rhs, rhs_free)
    a = jnp.transpose(lhs, (*lhs_batch, *lhs_free, *lhs_contract)).reshape(groups, rows, depth)
    b = jnp.transpose(rhs, (*rhs_batch, *rhs_contract, *rhs_free)).reshape(groups, depth, cols)
    out = _matmul(a, b, (mantissa_bits, semantics, offset, backward, impl, int(block_bytes)))
    out = out.reshape(*batch_shape, *[lhs.shape[d] for d in lhs_free], *[rhs.shape[d] for d in rhs_free])
    return out.astype(preferred_element_type or dtype)

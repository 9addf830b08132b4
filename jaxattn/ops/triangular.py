"""The inverse of a unit lower triangular matrix by matrix products only.

The chunked delta rule needs ``(I + A)^{-1}`` for a strictly lower triangular ``A`` of the chunk's
size (64 by default) once per chunk and head. A triangular solve is a sequence of row updates, slow
on CPU and absent from Pallas; blockwise inversion is matrix products throughout:

    M = [[M11, 0], [M21, M22]]   =>   M^{-1} = [[M11^{-1}, 0], [-M22^{-1} M21 M11^{-1}, M22^{-1}]].

Starting from the inverses of the diagonal ``leaf x leaf`` blocks, each level doubles the block size
with two products per block, ``L^3 / 3`` multiply-adds in all. A leaf block ``I + A_b`` (``A_b``
nilpotent, ``A_b^leaf = 0``) is inverted exactly by ``(I - A_b)(I + A_b^2)(I + A_b^4)...``. Its rounding
is not that of forward substitution: the powers
``A_b^(2^j)`` grow with the leaf (for the delta rule's systems with beta near 2 and nearly parallel
keys, the solution's relative error is 1.2e-5 with 4 x 4 leaves, 5.5e-5 with 8 x 8 and 0.22 with
16 x 16, against 1.1e-6 for a triangular solve; ``tests/ops/test_triangular.py``). Hence small
leaves. In the chunked delta rule on such inputs (T = 2048, against a float64 loop) the outputs'
error is 1.1e-5 with this inverse and 8.5e-6 with a triangular solve, at half the time on CPU.

See docs/delta_rule.md#the-in-chunk-inverse.
"""

import jax
import jax.numpy as jnp

_LEAF = 4  # size of the diagonal blocks inverted by the nilpotent product (see the module docstring)
# Blocks up to this size are multiplied as a broadcast product and sum, which XLA fuses into one
# loop; as dots, thousands of 4 x 4 and 8 x 8 products per call each cost a library call (on CPU
# the whole 64 x 64 inverse takes 2.6x longer that way).
_FUSED_PRODUCT_SIZE = 8


def _product(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` over the last two axes."""
    if a.shape[-1] <= _FUSED_PRODUCT_SIZE:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    return a @ b


def _diagonal_blocks(m: jax.Array, size: int) -> jax.Array:
    """``[..., L, L] -> [..., L / size, size, size]``, the blocks on the diagonal (static slices: a
    reshape-and-diagonal form of this trips XLA's CPU algebraic simplifier on 5-d batches)."""
    starts = range(0, m.shape[-1], size)
    return jnp.stack([m[..., i:i + size, i:i + size] for i in starts], axis=-3)


def _leaf_inverses(m: jax.Array, size: int) -> jax.Array:
    """Inverses ``[..., L / size, size, size]`` of the diagonal blocks of unit lower triangular ``m``."""
    nilpotent = _diagonal_blocks(m, size) - jnp.eye(size, dtype=m.dtype)
    inverse = jnp.eye(size, dtype=m.dtype) - nilpotent
    power = nilpotent
    for _ in range(max(size - 1, 1).bit_length() - 1):  # powers 2, 4, .. below size
        power = _product(power, power)
        inverse = inverse + _product(inverse, power)
    return inverse


def unit_lower_triangular_inverse(m: jax.Array) -> jax.Array:
    """``M^{-1}`` of unit lower triangular ``m`` ``[..., L, L]`` (the upper triangle is not read
    beyond the diagonal blocks' structure: it must be zero). Any ``L``: the matrix is padded to a
    power-of-two multiple of the leaf size with an identity block, which leaves the inverse's top
    left ``L x L`` block unchanged."""
    length = m.shape[-1]
    leaf = min(_LEAF, 1 << (length - 1).bit_length())
    padded = leaf * (1 << max(-(-length // leaf) - 1, 0).bit_length())
    if padded != length:
        pad = padded - length
        m = jnp.pad(m, [(0, 0)] * (m.ndim - 2) + [(0, pad), (0, pad)])
        m = m + jnp.diag(jnp.concatenate([jnp.zeros(length), jnp.ones(pad)]).astype(m.dtype))
    inverse = _leaf_inverses(m, leaf)  # [..., n, b, b]
    size = leaf
    while size < padded:
        pairs = inverse.reshape(*inverse.shape[:-3], -1, 2, size, size)
        upper, lower = pairs[..., 0, :, :], pairs[..., 1, :, :]
        coupling = _diagonal_blocks(m, 2 * size)[..., size:, :size]
        corner = -_product(lower, _product(coupling, upper))
        zeros = jnp.zeros_like(upper)
        inverse = jnp.concatenate([jnp.concatenate([upper, zeros], -1), jnp.concatenate([corner, lower], -1)], -2)
        size *= 2
    return inverse[..., 0, :length, :length]

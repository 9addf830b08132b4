"""L-Mul and mantissa rounding from their definitions, in float64: ``impl="reference"`` of
:func:`jaxattn.ops.lmul` and :func:`jaxattn.ops.round_mantissa`, the oracle of the bit-level path.

No bit fields: every value is decomposed with ``frexp`` into sign, exponent and mantissa and the
definition of docs/lmul.md is evaluated with float64 arithmetic, which is exact here (a format's
values, their m-bit roundings and the mantissa sums ``1 + x_m + y_m + 2^{-l}`` have at most 26
significant bits, and their exponents stay far inside float64's range); results are rounded to the
operands' format by the same float64 rule. The computation runs with 64-bit types enabled whatever
the global setting, and returns the operands' dtype.
"""

import math

import jax
import jax.numpy as jnp

from pallas_kernels.lmul_bits import float_format, offset_exponent

F64 = jnp.float64


def _limits(dtype) -> tuple[float, float, int]:
    """``(smallest normal, largest finite, log2 of the smallest normal)`` of a format."""
    info = jnp.finfo(dtype)
    return float(info.smallest_normal), float(info.max), int(info.minexp)


def _exponent(a: jax.Array) -> jax.Array:
    """``floor(log2 a)`` of positive finite float64 ``a`` by ``frexp`` (``a = f 2^e``, ``f in [1/2, 1)``)."""
    return jnp.frexp(a)[1] - 1


def _round_to_bits(v: jax.Array, bits: int, dtype, *, subnormal_grid: bool) -> jax.Array:
    """float64 ``v`` rounded to ``bits`` mantissa bits of ``dtype`` (ties to even, sign kept).

    The quantum is ``2^{e - bits}`` with ``e = floor(log2 |v|)``; with ``subnormal_grid``, ``e`` is
    never below the smallest normal binade's (subnormals round on that grid, as a stored bit field
    does), without it a product's significand rounds at its own exponent before any flush. Rounding
    past the largest finite value gives Inf (e4m3, which has no Inf: its largest finite value with
    ``bits`` bits)."""
    _, largest, min_exponent = _limits(dtype)
    a = jnp.abs(v)
    finite = jnp.isfinite(a) & (a > 0)
    exponent = _exponent(jnp.where(finite, a, 1.0))
    if subnormal_grid:
        exponent = jnp.maximum(exponent, min_exponent)
    quantum_exponent = exponent - bits
    rounded = jnp.ldexp(jnp.round(jnp.ldexp(a, -quantum_exponent)), quantum_exponent)  # jnp.round: half to even
    rounded = jnp.where(finite, rounded, a)
    if float_format(dtype).ieee:
        rounded = jnp.where(rounded > largest, jnp.inf, rounded)
    else:
        step = 2.0 ** (math.frexp(largest)[1] - 1 - bits)
        rounded = jnp.minimum(rounded, (largest // step) * step)
    return jnp.copysign(rounded, v)


def round_mantissa_reference(x: jax.Array, bits: int) -> jax.Array:
    """``x`` rounded to ``bits`` mantissa bits, ties to even, by float64 ``frexp``/``ldexp``."""
    with jax.enable_x64(True):
        return _round_to_bits(x.astype(F64), bits, x.dtype, subnormal_grid=True).astype(x.dtype)


def lmul_reference(x: jax.Array, y: jax.Array, mantissa_bits: int, semantics: str, offset: str) -> jax.Array:
    """L-Mul of ``x`` and ``y`` (one dtype, broadcasting) from the definition, in float64.

    Operands: subnormals flushed to signed zeros, then rounded to m bits. With ``|x| = (1 + x_m)
    2^{x_e}``, ``s = x_m + y_m + 2^{-l}``, the magnitude is ``(1 + frac(s)) 2^{x_e + y_e + floor(s)}``
    (``"bitwise"``: the mantissa carry moves into the exponent, exact in the format) or
    ``(1 + s) 2^{x_e + y_e}`` rounded to the format's M bits at its own exponent (``"formula"``).
    Then a magnitude below the smallest normal becomes 0 and one above the largest finite value Inf
    (e4m3: the largest finite value); zeros absorb; Inf and NaN propagate; Inf x 0 is NaN; the sign
    is the xor of the operands' signs.
    """
    dtype = x.dtype
    fmt = float_format(dtype)
    smallest, largest, _ = _limits(dtype)
    l = offset_exponent(mantissa_bits, offset)  # noqa: E741
    with jax.enable_x64(True):
        x, y = jnp.broadcast_arrays(x.astype(F64), y.astype(F64))
        x, y = (jnp.where(jnp.abs(v) < smallest, jnp.copysign(0.0, v), v) for v in (x, y))  # flush subnormals
        x, y = (_round_to_bits(v, mantissa_bits, dtype, subnormal_grid=False) for v in (x, y))  # normal now
        live = [jnp.isfinite(v) & (v != 0) for v in (x, y)]
        (x_e, y_e) = (_exponent(jnp.where(ok, jnp.abs(v), 1.0)) for v, ok in zip((x, y), live))
        x_m, y_m = jnp.ldexp(jnp.abs(x), -x_e) - 1.0, jnp.ldexp(jnp.abs(y), -y_e) - 1.0
        s = x_m + y_m + 2.0**-l
        if semantics == "bitwise":
            carry = jnp.floor(s)
            value = jnp.ldexp(1.0 + s - carry, x_e + y_e + carry.astype(x_e.dtype))
        else:
            value = _round_to_bits(jnp.ldexp(1.0 + s, x_e + y_e), fmt.mantissa, dtype, subnormal_grid=False)
        value = jnp.where(value < smallest, 0.0, value)
        value = jnp.where(value > largest, jnp.inf if fmt.ieee else largest, value)
        sign = jnp.where(jnp.signbit(x) ^ jnp.signbit(y), -1.0, 1.0)
        zero = ((x == 0) | (y == 0)) & jnp.isfinite(x) & jnp.isfinite(y)
        inf = (jnp.isinf(x) | jnp.isinf(y)) & ~zero
        nan = jnp.isnan(x) | jnp.isnan(y) | (jnp.isinf(x) & (y == 0)) | (jnp.isinf(y) & (x == 0))
        result = jnp.where(zero, 0.0, jnp.where(inf, jnp.inf, value)) * sign
        return jnp.where(nan, jnp.nan, result).astype(dtype)

"""Bit-level L-Mul arithmetic on the (sign, magnitude) fields of binary floating-point formats.

The one implementation of L-Mul's integer semantics (docs/lmul.md#bitwise-and-formula-semantics), shared by
:mod:`jaxattn.ops.lmul` (element-wise, on arrays) and the L-Matmul Pallas kernels (on fields
widened to uint32, so that the kernels need 32-bit integer arithmetic only). A value's fields are
``sign`` (its sign bit, in place) and ``magnitude`` (every other bit) as uint32.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

U32 = jnp.uint32


class FloatFormat(NamedTuple):
    """M mantissa bits, E exponent bits, the exponent bias, whether the all-ones exponent encodes
    Inf/NaN (IEEE) or the format has no Inf (e4m3fn: only S.1111.111 is NaN), and the unsigned
    integer type of its bit pattern."""

    mantissa: int
    exponent: int
    bias: int
    ieee: bool
    bits_dtype: object

    @property
    def sign_bit(self) -> int:
        return 1 << (self.mantissa + self.exponent)

    @property
    def max_finite(self) -> int:
        """Magnitude bits of the largest finite value."""
        all_ones = (1 << self.exponent) - 1
        if self.ieee:
            return ((all_ones - 1) << self.mantissa) | ((1 << self.mantissa) - 1)
        return (all_ones << self.mantissa) | ((1 << self.mantissa) - 2)

    @property
    def inf(self) -> int:
        return ((1 << self.exponent) - 1) << self.mantissa

    @property
    def nan(self) -> int:
        return self.inf | (1 << (self.mantissa - 1)) if self.ieee else self.inf | ((1 << self.mantissa) - 1)


FORMATS = {
    jnp.dtype(jnp.float32): FloatFormat(23, 8, 127, True, jnp.uint32),
    jnp.dtype(jnp.bfloat16): FloatFormat(7, 8, 127, True, jnp.uint16),
    jnp.dtype(jnp.float16): FloatFormat(10, 5, 15, True, jnp.uint16),
    jnp.dtype(jnp.float8_e4m3fn): FloatFormat(3, 4, 7, False, jnp.uint8),
    jnp.dtype(jnp.float8_e5m2): FloatFormat(2, 5, 15, True, jnp.uint8),
}
OFFSETS = ("paper", "wide")


def float_format(dtype) -> FloatFormat:
    try:
        return FORMATS[jnp.dtype(dtype)]
    except KeyError:
        names = ", ".join(d.name for d in FORMATS)
        raise TypeError(f"L-Mul: dtype {jnp.dtype(dtype).name} is not one of {names}") from None


def offset_exponent(mantissa_bits: int, offset: str = "paper") -> int:
    """``l`` of the offset ``2^{-l}``: the paper's ``l(m) = m (m <= 3), 3 (m = 4), 4 (m > 4)``, or 4 for ``"wide"``."""
    if offset not in OFFSETS:
        raise ValueError(f"L-Mul: offset={offset!r} is not one of {OFFSETS}")
    if offset == "wide":
        return 4
    return mantissa_bits if mantissa_bits <= 3 else (3 if mantissa_bits == 4 else 4)


def fields(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sign, magnitude)`` of ``x``'s bit pattern, widened to uint32."""
    fmt = float_format(x.dtype)
    u = jax.lax.bitcast_convert_type(x, fmt.bits_dtype).astype(U32)
    return u & U32(fmt.sign_bit), u & U32(fmt.sign_bit - 1)


def from_fields(sign: jax.Array, magnitude: jax.Array, dtype) -> jax.Array:
    fmt = float_format(dtype)
    return jax.lax.bitcast_convert_type((sign | magnitude).astype(fmt.bits_dtype), dtype)


def is_nan(magnitude: jax.Array, fmt: FloatFormat) -> jax.Array:
    return magnitude > U32(fmt.inf) if fmt.ieee else magnitude == U32(fmt.nan)


def is_inf(magnitude: jax.Array, fmt: FloatFormat) -> jax.Array:
    return magnitude == U32(fmt.inf) if fmt.ieee else jnp.zeros(magnitude.shape, bool)


def round_mantissa(x: jax.Array, bits: int) -> jax.Array:
    """``x`` rounded to ``bits`` (>= 1) mantissa bits, ties to even; a carry renormalises the
    exponent, rounding past the largest finite value gives Inf (e4m3: the largest finite value with
    ``bits`` mantissa bits); NaN and Inf are unchanged."""
    fmt = float_format(x.dtype)
    drop = fmt.mantissa - bits
    if drop == 0:
        return x
    sign, magnitude = fields(x)
    lowest_kept = (magnitude >> drop) & U32(1)
    rounded = ((magnitude + U32((1 << (drop - 1)) - 1) + lowest_kept) >> drop) << drop
    if not fmt.ieee:
        rounded = jnp.minimum(rounded, U32((fmt.max_finite >> drop) << drop))
    special = is_nan(magnitude, fmt) | is_inf(magnitude, fmt)
    return from_fields(sign, jnp.where(special, magnitude, rounded), x.dtype)


def flush_subnormals(x: jax.Array) -> jax.Array:
    """Subnormal values become zeros of the same sign."""
    fmt = float_format(x.dtype)
    sign, magnitude = fields(x)
    return from_fields(sign, jnp.where(magnitude < U32(1 << fmt.mantissa), U32(0), magnitude), x.dtype)


def prepare_operand(x: jax.Array, mantissa_bits: int) -> jax.Array:
    """An L-Mul operand as the products see it: subnormals flushed, then rounded to m mantissa bits."""
    return round_mantissa(flush_subnormals(x), mantissa_bits)


def power_of_two_part(x: jax.Array) -> jax.Array:
    """``p(x) = sign(x) 2^{floor(log2 |x|)}`` (0 for zeros and subnormals), exact in ``x``'s format."""
    fmt = float_format(x.dtype)
    sign, magnitude = fields(x)
    return from_fields(sign, magnitude & U32(((1 << fmt.exponent) - 1) << fmt.mantissa), x.dtype)


def _with_specials(sign, magnitude, x_mag, y_mag, fmt):
    """Zeros absorb (zero and subnormal operands), NaN and Inf propagate, Inf x 0 = NaN."""
    x_nan, y_nan, x_inf, y_inf = is_nan(x_mag, fmt), is_nan(y_mag, fmt), is_inf(x_mag, fmt), is_inf(y_mag, fmt)
    x_zero, y_zero = x_mag < U32(1 << fmt.mantissa), y_mag < U32(1 << fmt.mantissa)
    nan = x_nan | y_nan | (x_inf & y_zero) | (y_inf & x_zero)
    inf = (x_inf | y_inf) & ~nan
    magnitude = jnp.where((x_zero | y_zero) & ~nan & ~inf, U32(0), magnitude)
    magnitude = jnp.where(inf, U32(fmt.inf), magnitude)
    return sign, jnp.where(nan, U32(fmt.nan), magnitude)


def _assemble(exponent, fraction, x_sign, y_sign, x_mag, y_mag, fmt):
    """The product from its biased exponent field (int32, any range) and M-bit fraction: below the
    normal range it flushes to zero, above it gives Inf (e4m3: its largest finite value)."""
    magnitude = (jnp.maximum(exponent, 0).astype(U32) << fmt.mantissa) | fraction
    overflow = (exponent >= (1 << fmt.exponent)) | (magnitude > U32(fmt.max_finite))
    magnitude = jnp.where(overflow, U32(fmt.inf if fmt.ieee else fmt.max_finite), magnitude)
    magnitude = jnp.where(exponent <= 0, U32(0), magnitude)
    return _with_specials(x_sign ^ y_sign, magnitude, x_mag, y_mag, fmt)


def bitwise_product(x_sign, x_mag, y_sign, y_mag, fmt: FloatFormat, l: int):  # noqa: E741
    """One integer addition of the (exponent | mantissa) fields plus the offset ``2^{M - l}``; a
    mantissa carry moves into the exponent by itself. Fields in, ``(sign, magnitude)`` out."""
    total = x_mag + y_mag + U32(1 << (fmt.mantissa - l))  # < 2^32 for finite operands
    exponent = (total >> fmt.mantissa).astype(jnp.int32) - fmt.bias
    return _assemble(exponent, total & U32((1 << fmt.mantissa) - 1), x_sign, y_sign, x_mag, y_mag, fmt)


def formula_product(x_sign, x_mag, y_sign, y_mag, fmt: FloatFormat, l: int):  # noqa: E741
    """``(1 + s) 2^{x_e + y_e}`` in integers: the significand ``(1 + s) 2^M`` (in ``[1, 4) 2^M``) is
    rounded to M fraction bits (ties to even) by at most two right shifts, each adding one to the
    exponent, so it is rounded once and nothing over- or underflows on the way."""
    mask = U32((1 << fmt.mantissa) - 1)
    significand = (x_mag & mask) + (y_mag & mask) + U32((1 << fmt.mantissa) + (1 << (fmt.mantissa - l)))
    two = U32(2 << fmt.mantissa)
    wide = significand >= two
    significand = jnp.where(wide, (significand + ((significand >> 1) & U32(1))) >> 1, significand)
    carried = significand >= two  # rounding up reached 2: one more (exact) shift
    significand = jnp.where(carried, significand >> 1, significand)
    exponent = (
        (x_mag >> fmt.mantissa).astype(jnp.int32) + (y_mag >> fmt.mantissa).astype(jnp.int32) - fmt.bias
        + wide.astype(jnp.int32) + carried.astype(jnp.int32)
    )
    return _assemble(exponent, significand & mask, x_sign, y_sign, x_mag, y_mag, fmt)


# ------------------------------------------------------------------ L-Matmul terms
#
# In a matrix product the operands' fields are prepared once, and each element product is a few
# integer operations on the fp32 bit layout: a format's values are exact in fp32, and adding the
# fp32 fields of two values with mantissas of at most M bits (zeros below) gives the same carries
# as adding the format's fields; only the exponent range is the format's, checked by thresholds.
_FP32_BIAS_FIELD = 127 << 23


class MatmulOperand(NamedTuple):
    """One side of an L-Matmul, element-wise: the fp32 sign bit (uint32), the fp32 magnitude bits
    (uint32; the right-hand side with the offset added), and ``live`` (fp32 1, or 0 for zeros,
    Inf and NaN, whose products are set by :func:`special_products` instead)."""

    sign: jax.Array
    magnitude: jax.Array
    live: jax.Array


def matmul_operand(x: jax.Array, l: int, *, right: bool) -> MatmulOperand:  # noqa: E741
    """Prepares ``x`` (in its format, already rounded to m bits with subnormals flushed)."""
    fmt = float_format(x.dtype)
    _, magnitude = fields(x)
    live = (magnitude >= U32(1 << fmt.mantissa)) & ~is_nan(magnitude, fmt) & ~is_inf(magnitude, fmt)
    bits = jax.lax.bitcast_convert_type(jnp.where(live, x, jnp.zeros((), x.dtype)).astype(jnp.float32), U32)
    magnitude = bits & U32(0x7FFFFFFF)
    if right:
        magnitude = magnitude + U32(1 << (23 - l))  # the offset 2^-l, in fp32 mantissa units
    return MatmulOperand(bits & U32(0x80000000), magnitude, live.astype(jnp.float32))


def _fp32_bits(value: float) -> int:
    return int(np.array(value, np.float32).view(np.uint32))


def product_values(x: MatmulOperand, y: MatmulOperand, fmt: FloatFormat) -> jax.Array:
    """fp32 values of the bitwise L-Mul products of live operands (broadcasting), 0 for the others.

    ``u = |x| + |y| + offset`` is the product's fp32 field plus the fp32 bias (no uint32 overflow);
    below the format's smallest normal it flushes, above its largest finite value it is Inf (e4m3:
    that largest value)."""
    total = x.magnitude + y.magnitude
    largest = _fp32_bits(_max_finite_value(fmt))
    low, high = U32(_fp32_bits(2.0 ** (1 - fmt.bias)) + _FP32_BIAS_FIELD), U32(largest + _FP32_BIAS_FIELD)
    overflow = U32(0x7F800000 if fmt.ieee else largest)
    magnitude = jnp.where(total < low, U32(0), total - U32(_FP32_BIAS_FIELD))
    magnitude = jnp.where(total > high, overflow, magnitude)
    value = jax.lax.bitcast_convert_type(magnitude | (x.sign ^ y.sign), jnp.float32)
    return value * (x.live * y.live)


def _max_finite_value(fmt: FloatFormat) -> float:
    exponent = (fmt.max_finite >> fmt.mantissa) - fmt.bias
    fraction = (fmt.max_finite & ((1 << fmt.mantissa) - 1)) / 2**fmt.mantissa
    return (1 + fraction) * 2.0**exponent


def special_products(x: jax.Array, y: jax.Array, matmul) -> jax.Array:
    """What Inf and NaN operands add to an L-Matmul ``sum_k x[.., k] y[k, ..]``: +Inf, -Inf (NaN if
    both occur) or NaN (NaN operand, Inf x 0) where they occur, else 0. ``matmul(a, b)`` is the
    contraction of 0/1 indicator arrays of ``x``'s and ``y``'s shapes (an ordinary matrix product)."""
    fmt = float_format(x.dtype)
    (x_sign, x_mag), (y_sign, y_mag) = fields(x), fields(y)
    f32 = lambda mask: mask.astype(jnp.float32)  # noqa: E731
    x_nan, y_nan, x_inf, y_inf = is_nan(x_mag, fmt), is_nan(y_mag, fmt), is_inf(x_mag, fmt), is_inf(y_mag, fmt)
    x_zero, y_zero = x_mag < U32(1 << fmt.mantissa), y_mag < U32(1 << fmt.mantissa)
    x_neg, y_neg = x_sign != 0, y_sign != 0
    x_pos_inf, x_neg_inf, y_pos_inf, y_neg_inf = x_inf & ~x_neg, x_inf & x_neg, y_inf & ~y_neg, y_inf & y_neg
    x_pos, x_negative = ~x_zero & ~x_nan & ~x_neg, ~x_zero & ~x_nan & x_neg  # nonzero, Inf included
    y_pos, y_negative = ~y_zero & ~y_nan & ~y_neg, ~y_zero & ~y_nan & y_neg
    positive = (matmul(f32(x_pos_inf), f32(y_pos)) + matmul(f32(x_neg_inf), f32(y_negative))
                + matmul(f32(x_pos), f32(y_pos_inf)) + matmul(f32(x_negative), f32(y_neg_inf)))
    negative = (matmul(f32(x_pos_inf), f32(y_negative)) + matmul(f32(x_neg_inf), f32(y_pos))
                + matmul(f32(x_pos), f32(y_neg_inf)) + matmul(f32(x_negative), f32(y_pos_inf)))
    nan = (matmul(f32(x_nan), jnp.ones_like(f32(y_nan))) + matmul(jnp.ones_like(f32(x_nan)), f32(y_nan))
           + matmul(f32(x_inf), f32(y_zero)) + matmul(f32(x_zero), f32(y_inf)))
    out = jnp.where(positive > 0, jnp.inf, 0.0) + jnp.where(negative > 0, -jnp.inf, 0.0)
    return out + jnp.where(nan > 0, jnp.nan, 0.0)

"""L-Mul (Luo & Sun, "Addition is All You Need"): a floating-point product from one integer addition.

PAPERS.md section 4. With ``x = (1 + x_m) 2^{x_e}`` and m-bit mantissas (operands first rounded to
m bits, round to nearest even),

    ``L-Mul(x, y) = (1 + x_m + y_m + 2^{-l(m)}) 2^{x_e + y_e}``, ``l(m) = m (m <= 3), 3 (m = 4), 4 (m > 4)``,

sign the xor of the signs. Two semantics:

  * ``"bitwise"`` (canonical): the sum of the operands' (exponent | mantissa) bit fields minus
    ``(bias << M) - 2^{M - l}`` as one integer addition in the operands' format (M its mantissa
    width), so a mantissa sum ``s = x_m + y_m + 2^{-l} >= 1`` carries into the exponent:
    ``(1 + frac(s)) 2^{x_e + y_e + floor(s)}``.
  * ``"formula"``: the literal formula, ``(1 + s) 2^{x_e + y_e}`` without the carry, rounded to
    the format (equal to ``x p(y) + p(x) y + (2^{-l} - 1) p(x) p(y)`` with
    ``p(v) = sign(v) 2^{floor(log2 |v|)}``, which makes an L-Matmul three matrix products).

``offset="wide"`` uses ``2^{-4}`` whatever m (more accurate when the result format is wider than the
m-bit operands; it needs a format with at least 4 mantissa bits). Zeros absorb, NaN and Inf
propagate (Inf x 0 = NaN), overflow gives Inf (the largest finite value for e4m3, which has no
Inf), and subnormal inputs and results flush to zero. Formats: fp32, bf16, fp16, fp8 e4m3fn and
e5m2. Bit operations have no derivative: :func:`lmul` carries a ``custom_vjp`` (straight-through:
the exact product's gradient; or ``backward="lmul"``: L-Mul in the backward products too).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

_U32 = jnp.uint32


class FloatFormat(NamedTuple):
    """A binary floating-point format: M mantissa bits, E exponent bits, the exponent bias, whether
    the all-ones exponent encodes Inf/NaN (IEEE) or the format has no Inf (e4m3fn: only S.1111.111
    is NaN), and the unsigned integer type of its bit pattern."""

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
        """Bit pattern (without sign) of the largest finite value."""
        all_ones = (1 << self.exponent) - 1
        if self.ieee:
            return ((all_ones - 1) << self.mantissa) | ((1 << self.mantissa) - 1)
        return (all_ones << self.mantissa) | ((1 << self.mantissa) - 2)

    @property
    def inf(self) -> int:
        return ((1 << self.exponent) - 1) << self.mantissa


FORMATS = {
    jnp.dtype(jnp.float32): FloatFormat(23, 8, 127, True, jnp.uint32),
    jnp.dtype(jnp.bfloat16): FloatFormat(7, 8, 127, True, jnp.uint16),
    jnp.dtype(jnp.float16): FloatFormat(10, 5, 15, True, jnp.uint16),
    jnp.dtype(jnp.float8_e4m3fn): FloatFormat(3, 4, 7, False, jnp.uint8),
    jnp.dtype(jnp.float8_e5m2): FloatFormat(2, 5, 15, True, jnp.uint8),
}
SEMANTICS = ("bitwise", "formula")
OFFSETS = ("paper", "wide")


def float_format(dtype) -> FloatFormat:
    try:
        return FORMATS[jnp.dtype(dtype)]
    except KeyError:
        names = ", ".join(d.name for d in FORMATS)
        raise TypeError(f"L-Mul: dtype {jnp.dtype(dtype).name} is not one of {names}") from None


def offset_exponent(mantissa_bits: int, offset: str = "paper") -> int:
    """``l`` of the offset ``2^{-l}``: the paper's ``l(m)``, or 4 for ``"wide"``."""
    if offset not in OFFSETS:
        raise ValueError(f"L-Mul: offset={offset!r} is not one of {OFFSETS}")
    if offset == "wide":
        return 4
    return mantissa_bits if mantissa_bits <= 3 else (3 if mantissa_bits == 4 else 4)


def _bits(x: jax.Array, fmt: FloatFormat) -> tuple[jax.Array, jax.Array]:
    """``(sign, magnitude)`` bit fields of ``x`` widened to uint32."""
    u = jax.lax.bitcast_convert_type(x, fmt.bits_dtype).astype(_U32)
    return u & _U32(fmt.sign_bit), u & _U32(fmt.sign_bit - 1)


def _from_bits(sign: jax.Array, magnitude: jax.Array, dtype) -> jax.Array:
    fmt = float_format(dtype)
    return jax.lax.bitcast_convert_type((sign | magnitude).astype(fmt.bits_dtype), dtype)


def _is_nan(magnitude: jax.Array, fmt: FloatFormat) -> jax.Array:
    return magnitude > _U32(fmt.inf) if fmt.ieee else magnitude == _U32(fmt.inf | ((1 << fmt.mantissa) - 1))


def _is_inf(magnitude: jax.Array, fmt: FloatFormat) -> jax.Array:
    return magnitude == _U32(fmt.inf) if fmt.ieee else jnp.zeros(magnitude.shape, bool)


def _check_bits(mantissa_bits: int, fmt: FloatFormat, name: str) -> None:
    if not isinstance(mantissa_bits, int) or not 1 <= mantissa_bits <= fmt.mantissa:
        raise ValueError(f"{name}: mantissa_bits must be an int in [1, {fmt.mantissa}] for this format, got {mantissa_bits!r}")


def round_mantissa(x: jax.Array, bits: int) -> jax.Array:
    """``x`` rounded to ``bits`` mantissa bits (round to nearest, ties to even), in ``x``'s format.

    A carry renormalises the exponent; a value that rounds past the largest finite one becomes Inf
    (e4m3: the largest finite value with ``bits`` mantissa bits). NaN and Inf are unchanged.
    """
    x = jnp.asarray(x)
    fmt = float_format(x.dtype)
    _check_bits(bits, fmt, "round_mantissa")
    drop = fmt.mantissa - bits
    if drop == 0:
        return x
    sign, magnitude = _bits(x, fmt)
    lowest_kept = (magnitude >> drop) & _U32(1)
    rounded = ((magnitude + _U32((1 << (drop - 1)) - 1) + lowest_kept) >> drop) << drop
    if not fmt.ieee:
        rounded = jnp.minimum(rounded, _U32((fmt.max_finite >> drop) << drop))
    special = _is_nan(magnitude, fmt) | _is_inf(magnitude, fmt)
    return _from_bits(sign, jnp.where(special, magnitude, rounded), x.dtype)


def _specials(x_mag, y_mag, fmt):
    """Masks: result is NaN, result is Inf, result is zero (an operand is zero or subnormal)."""
    x_nan, y_nan, x_inf, y_inf = _is_nan(x_mag, fmt), _is_nan(y_mag, fmt), _is_inf(x_mag, fmt), _is_inf(y_mag, fmt)
    x_zero, y_zero = (m < _U32(1 << fmt.mantissa) for m in (x_mag, y_mag))
    nan = x_nan | y_nan | (x_inf & y_zero) | (y_inf & x_zero)
    inf = (x_inf | y_inf) & ~nan
    return nan, inf, (x_zero | y_zero) & ~nan & ~inf


def _assemble(exponent, fraction, x_sign, y_sign, x_mag, y_mag, dtype):
    """The product from its biased exponent field (int32, any range) and M-bit fraction: below the
    normal range it flushes to zero, above it gives Inf (e4m3: its largest finite value)."""
    fmt = float_format(dtype)
    magnitude = (jnp.maximum(exponent, 0).astype(_U32) << fmt.mantissa) | fraction
    overflow = (exponent >= (1 << fmt.exponent)) | (magnitude > _U32(fmt.max_finite))
    magnitude = jnp.where(overflow, _U32(fmt.inf if fmt.ieee else fmt.max_finite), magnitude)
    magnitude = jnp.where(exponent <= 0, _U32(0), magnitude)
    return _with_specials(x_sign ^ y_sign, magnitude, x_mag, y_mag, dtype)


def _lmul_bitwise(x, y, mantissa_bits, l):
    """One integer addition of the (exponent | mantissa) fields plus the offset ``2^{M - l}``; a
    mantissa carry moves into the exponent by itself."""
    fmt = float_format(x.dtype)
    (x_sign, x_mag), (y_sign, y_mag) = _bits(x, fmt), _bits(y, fmt)
    total = x_mag + y_mag + _U32(1 << (fmt.mantissa - l))  # < 2^32 for finite operands
    exponent = (total >> fmt.mantissa).astype(jnp.int32) - fmt.bias
    fraction = total & _U32((1 << fmt.mantissa) - 1)
    return _assemble(exponent, fraction, x_sign, y_sign, x_mag, y_mag, x.dtype)


def _with_specials(sign, magnitude, x_mag, y_mag, dtype):
    """The product's bits with zeros absorbing, Inf and NaN propagating (Inf x 0 = NaN)."""
    fmt = float_format(dtype)
    nan, inf, zero = _specials(x_mag, y_mag, fmt)
    nan_value = fmt.inf | (1 << (fmt.mantissa - 1)) if fmt.ieee else fmt.inf | ((1 << fmt.mantissa) - 1)
    magnitude = jnp.where(zero, _U32(0), magnitude)
    magnitude = jnp.where(inf, _U32(fmt.inf), magnitude)
    magnitude = jnp.where(nan, _U32(nan_value), magnitude)
    return _from_bits(sign, magnitude, dtype)


def flush_subnormals(x: jax.Array) -> jax.Array:
    """Subnormal values become zeros of the same sign."""
    fmt = float_format(x.dtype)
    sign, magnitude = _bits(x, fmt)
    return _from_bits(sign, jnp.where(magnitude < _U32(1 << fmt.mantissa), _U32(0), magnitude), x.dtype)


def power_of_two_part(x: jax.Array) -> jax.Array:
    """``p(x) = sign(x) 2^{floor(log2 |x|)}`` (0 for zeros and subnormals), exact in ``x``'s format."""
    fmt = float_format(x.dtype)
    sign, magnitude = _bits(x, fmt)
    exponent_only = magnitude & _U32(((1 << fmt.exponent) - 1) << fmt.mantissa)
    return _from_bits(sign, exponent_only, x.dtype)


def _lmul_formula(x, y, mantissa_bits, l):
    """``(1 + s) 2^{x_e + y_e}`` with integer arithmetic: the significand ``(1 + s) 2^M`` (in
    ``[1, 4) 2^M``) is rounded to M fraction bits (ties to even) by at most two right shifts, each
    adding one to the exponent, so it is rounded once and nothing over- or underflows on the way."""
    fmt = float_format(x.dtype)
    (x_sign, x_mag), (y_sign, y_mag) = _bits(x, fmt), _bits(y, fmt)
    mantissa_mask = _U32((1 << fmt.mantissa) - 1)
    significand = (x_mag & mantissa_mask) + (y_mag & mantissa_mask) + _U32((1 << fmt.mantissa) + (1 << (fmt.mantissa - l)))
    two = _U32(2 << fmt.mantissa)
    wide = significand >= two
    significand = jnp.where(wide, (significand + ((significand >> 1) & _U32(1))) >> 1, significand)
    carried = significand >= two  # rounding up reached 2: one more (exact) shift
    significand = jnp.where(carried, significand >> 1, significand)
    exponent = (
        (x_mag >> fmt.mantissa).astype(jnp.int32) + (y_mag >> fmt.mantissa).astype(jnp.int32) - fmt.bias
        + wide.astype(jnp.int32) + carried.astype(jnp.int32)
    )
    return _assemble(exponent, significand & mantissa_mask, x_sign, y_sign, x_mag, y_mag, x.dtype)


def _validate(x, y, mantissa_bits, semantics, offset, name):
    if x.dtype != y.dtype:
        raise TypeError(f"{name}: operands must have one dtype, got {x.dtype} and {y.dtype}")
    fmt = float_format(x.dtype)
    if semantics not in SEMANTICS:
        raise ValueError(f"{name}: semantics={semantics!r} is not one of {SEMANTICS}")
    _check_bits(mantissa_bits, fmt, name)
    l = offset_exponent(mantissa_bits, offset)  # noqa: E741
    if l > fmt.mantissa:
        raise ValueError(
            f"{name}: offset 2^-{l} needs at least {l} mantissa bits; {x.dtype.name} has {fmt.mantissa}"
        )
    return l


def lmul_forward(x, y, *, mantissa_bits: int, semantics: str = "bitwise", offset: str = "paper") -> jax.Array:
    """L-Mul without a gradient rule (the primal of :func:`lmul`)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    l = _validate(x, y, mantissa_bits, semantics, offset, "lmul")  # noqa: E741
    x, y = (round_mantissa(flush_subnormals(a), mantissa_bits) for a in (x, y))
    x, y = jnp.broadcast_arrays(x, y)
    core = _lmul_bitwise if semantics == "bitwise" else _lmul_formula
    return core(x, y, mantissa_bits, l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _lmul(x, y, mantissa_bits, semantics, offset, backward):
    return lmul_forward(x, y, mantissa_bits=mantissa_bits, semantics=semantics, offset=offset)


def _lmul_fwd(x, y, mantissa_bits, semantics, offset, backward):
    return _lmul(x, y, mantissa_bits, semantics, offset, backward), (x, y)


def _lmul_bwd(mantissa_bits, semantics, offset, backward, residuals, g):
    x, y = residuals
    if backward == "lmul":
        product = functools.partial(lmul_forward, mantissa_bits=mantissa_bits, semantics=semantics, offset=offset)
        dx, dy = product(g.astype(y.dtype), y), product(g.astype(x.dtype), x)
    else:
        dx, dy = g * y, g * x
    return _sum_to_shape(dx, x.shape).astype(x.dtype), _sum_to_shape(dy, y.shape).astype(y.dtype)


def _sum_to_shape(d: jax.Array, shape) -> jax.Array:
    """Sums a broadcast gradient back to an operand's ``shape``."""
    leading = d.ndim - len(shape)
    d = jnp.sum(d, axis=tuple(range(leading))) if leading else d
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and d.shape[i] != 1)
    return jnp.sum(d, axis=axes, keepdims=True) if axes else d


_lmul.defvjp(_lmul_fwd, _lmul_bwd)
BACKWARDS = ("straight_through", "lmul")


def lmul(x, y, *, mantissa_bits: int, semantics: str = "bitwise", offset: str = "paper",
         backward: str = "straight_through") -> jax.Array:
    """Element-wise L-Mul of ``x`` and ``y`` (broadcasting), in their common format.

    Args:
      x, y: fp32, bf16, fp16, float8_e4m3fn or float8_e5m2 arrays of one dtype.
      mantissa_bits: m, the operands' mantissa width after rounding (1 to the format's width).
      semantics: ``"bitwise"`` (the integer adder, canonical) or ``"formula"`` (the paper's formula).
      offset: ``"paper"`` (``2^{-l(m)}``) or ``"wide"`` (``2^{-4}``).
      backward: ``"straight_through"`` (``dx = g y``, ``dy = g x``) or ``"lmul"`` (those products by L-Mul).
    """
    if backward not in BACKWARDS:
        raise ValueError(f"lmul: backward={backward!r} is not one of {BACKWARDS}")
    return _lmul(jnp.asarray(x), jnp.asarray(y), mantissa_bits, semantics, offset, backward)

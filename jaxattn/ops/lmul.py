"""L-Mul (Luo & Sun, "Addition is All You Need"): a floating-point product from one integer addition.

docs/lmul.md. With ``x = (1 + x_m) 2^{x_e}`` and m-bit mantissas (operands first rounded to
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

Implementations (``impl=``, resolved by :mod:`jaxattn.ops.dispatch`): ``"xla"`` (the default, by
``"auto"``) works on the bit fields (:mod:`pallas_kernels.lmul_bits`, shared with the L-Matmul
kernels); ``"reference"`` evaluates the definition above with float64 arithmetic
(:mod:`jaxattn.ops.lmul_reference`), the oracle the bit-level path is tested against bit for bit.
"""

import functools

import jax
import jax.numpy as jnp

from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.lmul_reference import lmul_reference, round_mantissa_reference
from pallas_kernels import lmul_bits
from pallas_kernels.lmul_bits import FORMATS, OFFSETS, float_format, offset_exponent  # noqa: F401  (re-exported)

SEMANTICS = ("bitwise", "formula")
BACKWARDS = ("straight_through", "lmul")
_PRODUCTS = {"bitwise": lmul_bits.bitwise_product, "formula": lmul_bits.formula_product}


def _check_bits(mantissa_bits: int, fmt, name: str) -> None:
    if not isinstance(mantissa_bits, int) or not 1 <= mantissa_bits <= fmt.mantissa:
        raise ValueError(f"{name}: mantissa_bits must be an int in [1, {fmt.mantissa}] for this format, got {mantissa_bits!r}")


def round_mantissa(x: jax.Array, bits: int, *, impl: str = "auto") -> jax.Array:
    """``x`` rounded to ``bits`` mantissa bits (round to nearest, ties to even), in ``x``'s format.

    A carry renormalises the exponent; a value that rounds past the largest finite one becomes Inf
    (e4m3: the largest finite value with ``bits`` mantissa bits). NaN and Inf are unchanged;
    subnormals round on the grid of the smallest normal binade (quantum ``2^{e_min - bits}``).
    ``impl``: ``"xla"`` (bit fields; ``"auto"``) or ``"reference"`` (float64 ``frexp``/``ldexp``).

    Example::

        round_mantissa(jnp.array([1.0625, 1.1875]), 3)  # [1.0, 1.25] (ties to even)
    """
    x = jnp.asarray(x)
    _check_bits(bits, float_format(x.dtype), "round_mantissa")
    implementation = resolve_impl("round_mantissa", impl, _ROUND_IMPLEMENTATIONS)
    return implementation(x, bits)


def validate_arguments(x, y, mantissa_bits, semantics, offset, name) -> None:
    """Checks L-Mul's operands and options (errors name ``name``): one dtype, a known semantics,
    ``mantissa_bits`` in ``[1, M]`` and an offset ``2^{-l}`` the format can hold (``l <= M``)."""
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


def _lmul_xla(x, y, mantissa_bits, semantics, offset):
    """The integer adder on the operands' bit fields (:mod:`pallas_kernels.lmul_bits`)."""
    l = offset_exponent(mantissa_bits, offset)  # noqa: E741
    x, y = (lmul_bits.prepare_operand(a, mantissa_bits) for a in (x, y))
    (x_sign, x_mag), (y_sign, y_mag) = lmul_bits.fields(x), lmul_bits.fields(y)
    sign, magnitude = _PRODUCTS[semantics](x_sign, x_mag, y_sign, y_mag, float_format(x.dtype), l)
    return lmul_bits.from_fields(sign, magnitude, x.dtype)


_IMPLEMENTATIONS = {"reference": lmul_reference, "xla": _lmul_xla}
_ROUND_IMPLEMENTATIONS = {"reference": round_mantissa_reference, "xla": lmul_bits.round_mantissa}


def lmul_forward(x, y, *, mantissa_bits: int, semantics: str = "bitwise", offset: str = "paper",
                 impl: str = "auto") -> jax.Array:
    """L-Mul without a gradient rule (the primal of :func:`lmul`)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    validate_arguments(x, y, mantissa_bits, semantics, offset, "lmul")
    return resolve_impl("lmul", impl, _IMPLEMENTATIONS)(x, y, mantissa_bits, semantics, offset)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _lmul(x, y, mantissa_bits, semantics, offset, backward, impl):
    return lmul_forward(x, y, mantissa_bits=mantissa_bits, semantics=semantics, offset=offset, impl=impl)


def _lmul_fwd(x, y, mantissa_bits, semantics, offset, backward, impl):
    return _lmul(x, y, mantissa_bits, semantics, offset, backward, impl), (x, y)


def _lmul_bwd(mantissa_bits, semantics, offset, backward, impl, residuals, g):
    x, y = residuals
    if backward == "lmul":
        product = functools.partial(lmul_forward, mantissa_bits=mantissa_bits, semantics=semantics, offset=offset,
                                    impl=impl)
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


def lmul(x, y, *, mantissa_bits: int, semantics: str = "bitwise", offset: str = "paper",
         backward: str = "straight_through", impl: str = "auto") -> jax.Array:
    """Element-wise L-Mul of ``x`` and ``y`` (broadcasting), in their common format.

    Args:
      x, y: fp32, bf16, fp16, float8_e4m3fn or float8_e5m2 arrays of one dtype.
      mantissa_bits: m, the operands' mantissa width after rounding (1 to the format's width).
      semantics: ``"bitwise"`` (the integer adder, canonical) or ``"formula"`` (the paper's formula).
      offset: ``"paper"`` (``2^{-l(m)}``) or ``"wide"`` (``2^{-4}``).
      backward: ``"straight_through"`` (``dx = g y``, ``dy = g x``) or ``"lmul"`` (those products by L-Mul).
      impl: ``"xla"`` (the bit fields; ``"auto"``) or ``"reference"`` (the definition in float64);
        the gradient rule is the same for both.

    Returns:
      ``x * y`` by L-Mul, broadcast, in the operands' dtype.

    Example::

        x, y = jnp.array([1.5, -3.0]), jnp.array([2.25, 0.5])
        lmul(x, y, mantissa_bits=3)  # close to x * y = [3.375, -1.5]
    """
    if backward not in BACKWARDS:
        raise ValueError(f"lmul: backward={backward!r} is not one of {BACKWARDS}")
    return _lmul(jnp.asarray(x), jnp.asarray(y), mantissa_bits, semantics, offset, backward, impl)

"""L-Mul against an independent float64 model of its semantics: every pair of fp8 values, random
fp32 / bf16 / fp16 inputs for every mantissa width, special values, symmetries and gradients."""

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxattn.ops.lmul import FORMATS, lmul, lmul_forward, offset_exponent, round_mantissa


def format_constants(dtype):
    info = ml_dtypes.finfo(dtype)
    fmt = FORMATS[jnp.dtype(dtype)]
    return fmt.mantissa, float(info.smallest_normal), float(info.max), fmt.ieee


def model_round(v, bits, dtype):
    """Round to ``bits`` mantissa bits, ties to even, with float64 arithmetic (not bit fields)."""
    mantissa, smallest, largest, ieee = format_constants(dtype)
    a = np.abs(v)
    finite = np.isfinite(a) & (a > 0)
    exponent = np.floor(np.log2(np.where(finite, a, 1.0)))
    scale = 2.0 ** (exponent - bits)
    rounded = np.where(finite, np.round(a / scale) * scale, a)  # np.round: half to even
    if ieee:
        rounded = np.where(rounded > largest, np.inf, rounded)
    else:
        top = np.floor(np.log2(largest))
        step = 2.0 ** (top - bits)
        rounded = np.minimum(rounded, np.floor(largest / step) * step)
    return np.copysign(rounded, v)


def model_lmul(x, y, bits, dtype, semantics="bitwise", offset="paper"):
    """L-Mul from docs/lmul.md in float64: ``(1 + frac(s)) 2^(e_x + e_y + floor(s))`` (bitwise) or
    ``(1 + s) 2^(e_x + e_y)`` rounded to the format (formula)."""
    mantissa, smallest, largest, ieee = format_constants(dtype)
    l = offset_exponent(bits, offset)  # noqa: E741
    with np.errstate(all="ignore"):
        x, y = (np.where(np.abs(v) < smallest, np.copysign(0.0, v), v) for v in (x, y))  # flush subnormals
        x, y = model_round(x, bits, dtype), model_round(y, bits, dtype)
        ex, ey = (np.floor(np.log2(np.where(np.isfinite(v) & (v != 0), np.abs(v), 1.0))) for v in (x, y))
        mx, my = np.abs(x) / 2.0**ex - 1, np.abs(y) / 2.0**ey - 1
        s = mx + my + 2.0**-l
        if semantics == "bitwise":
            carry = np.floor(s)
            value = (1 + s - carry) * 2.0 ** (ex + ey + carry)
        else:
            value = model_round((1 + s) * 2.0 ** (ex + ey), mantissa, dtype)  # rounded to the format
        value = np.where(value < smallest, 0.0, value)
        value = np.where(value > largest, np.inf if ieee else largest, value)
        sign = np.where(np.signbit(x) ^ np.signbit(y), -1.0, 1.0)
        result = sign * value
        zero = ((x == 0) | (y == 0)) & np.isfinite(x) & np.isfinite(y)
        result = np.where(zero, sign * 0.0, result)
        inf = (np.isinf(x) | np.isinf(y)) & ~zero
        result = np.where(inf, sign * np.inf, result)
        nan = np.isnan(x) | np.isnan(y) | (np.isinf(x) & (y == 0)) | (np.isinf(y) & (x == 0))
        return np.where(nan, np.nan, result)


def assert_same_values(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got[ok], want[ok])
    np.testing.assert_array_equal(np.signbit(got[ok]), np.signbit(want[ok]))


def all_fp8_pairs(dtype):
    values = np.arange(256, dtype=np.uint8).view(dtype)
    x, y = np.meshgrid(values, values, indexing="ij")
    return x.ravel(), y.ravel()


@pytest.mark.parametrize("dtype, bits", [(ml_dtypes.float8_e4m3fn, b) for b in (1, 2, 3)]
                         + [(ml_dtypes.float8_e5m2, b) for b in (1, 2)])
@pytest.mark.parametrize("semantics", ["bitwise", "formula"])
def test_every_fp8_pair_is_bit_exact(dtype, bits, semantics):
    x, y = all_fp8_pairs(dtype)
    got = lmul_forward(jnp.asarray(x), jnp.asarray(y), mantissa_bits=bits, semantics=semantics)
    assert got.dtype == jnp.dtype(dtype)
    assert_same_values(got, model_lmul(x.astype(np.float64), y.astype(np.float64), bits, dtype, semantics))


def random_values(dtype, size, seed):
    """Normal values across the exponent range, plus zeros, subnormals, extremes, Inf and NaN."""
    rng = np.random.default_rng(seed)
    info = ml_dtypes.finfo(dtype)
    exponents = rng.integers(int(np.log2(float(info.smallest_normal))) - 2, int(np.log2(float(info.max))) + 1, size)
    values = rng.uniform(1, 2, size) * 2.0**exponents * rng.choice([-1, 1], size)
    specials = [0.0, -0.0, float(info.smallest_subnormal), float(info.max), -float(info.max), np.inf, -np.inf, np.nan]
    return np.concatenate([specials, values]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
@pytest.mark.parametrize("semantics", ["bitwise", "formula"])
def test_random_inputs_are_bit_exact_for_every_width_and_offset(dtype, semantics):
    mantissa = FORMATS[jnp.dtype(dtype)].mantissa
    for bits, offset in itertools.product(range(1, mantissa + 1), ("paper", "wide")):
        x, y = random_values(dtype, 3000, seed=bits), random_values(dtype, 3000, seed=100 + bits)
        y = np.concatenate([y[8:16], y[:8], y[16:]])  # specials meet specials and ordinary values
        got = lmul_forward(jnp.asarray(x), jnp.asarray(y), mantissa_bits=bits, semantics=semantics, offset=offset)
        want = model_lmul(x.astype(np.float64), y.astype(np.float64), bits, dtype, semantics, offset)
        assert_same_values(got, want)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn])
def test_round_mantissa_is_round_to_nearest_even(dtype):
    x = random_values(dtype, 5000, seed=3)
    for bits in range(1, FORMATS[jnp.dtype(dtype)].mantissa + 1):
        got = round_mantissa(jnp.asarray(x), bits)
        want = model_round(x.astype(np.float64), bits, dtype)
        normal = np.abs(x.astype(np.float64)) >= float(ml_dtypes.finfo(dtype).smallest_normal)
        assert_same_values(np.asarray(got)[normal], want[normal])


def test_special_values():
    nan, inf = float("nan"), float("inf")
    x = jnp.array([0.0, -0.0, 0.0, inf, inf, -inf, nan, 3e38, 1e-30, 1e-40, 2.0], jnp.float32)
    y = jnp.array([0.0, 5.0, -inf, 0.0, 2.0, 2.0, 1.0, 1e10, 1e-30, 1.0, -1e-40], jnp.float32)
    got = np.asarray(lmul(x, y, mantissa_bits=3))
    want = np.array([0.0, -0.0, nan, nan, inf, -inf, nan, inf, 0.0, 0.0, -0.0])
    assert_same_values(got, want)
    # e4m3 has no Inf: overflow saturates at its largest finite value, 448.
    big = jnp.array([448.0, -448.0], jnp.float8_e4m3fn)
    np.testing.assert_array_equal(np.asarray(lmul(big, big, mantissa_bits=3), np.float32), [448.0, 448.0])


def test_known_products():
    x = jnp.array([1.5, -2.0, 1.75], jnp.float32)
    y = jnp.array([1.25, 3.0, 1.75], jnp.float32)
    # m = 3, l = 3: s = x_m + y_m + 1/8. 1.5 x 1.25: s = .875 -> 1.875; -2 x 3: s = .625 -> -6.5;
    # 1.75 x 1.75: s = 1.625 carries -> (1 + .625) 2^1 = 3.25 (bitwise), (1 + 1.625) = 2.625 (formula).
    np.testing.assert_array_equal(lmul(x, y, mantissa_bits=3), [1.875, -6.5, 3.25])
    np.testing.assert_array_equal(lmul(x, y, mantissa_bits=3, semantics="formula"), [1.875, -6.5, 2.625])


def test_commutative_and_sign_symmetric():
    x, y = (jnp.asarray(random_values(np.float32, 2000, seed=s)) for s in (7, 8))
    for semantics in ("bitwise", "formula"):
        xy = np.asarray(lmul(x, y, mantissa_bits=4, semantics=semantics))
        assert_same_values(lmul(y, x, mantissa_bits=4, semantics=semantics), xy)
        assert_same_values(lmul(-x, y, mantissa_bits=4, semantics=semantics), -xy)
        assert_same_values(lmul(-x, -y, mantissa_bits=4, semantics=semantics), xy)


def test_gradients():
    x = jax.random.normal(jax.random.key(0), (5, 1))
    y = jax.random.normal(jax.random.key(1), (1, 4))
    g = jax.random.normal(jax.random.key(2), (5, 4))

    def vjp(backward):
        _, pullback = jax.vjp(lambda a, b: lmul(a, b, mantissa_bits=3, backward=backward), x, y)
        return pullback(g)

    dx, dy = vjp("straight_through")  # the exact product's gradient, summed over broadcasting
    np.testing.assert_allclose(dx, jnp.sum(g * y, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(dy, jnp.sum(g * x, axis=0, keepdims=True), rtol=1e-6)
    dx, dy = vjp("lmul")
    np.testing.assert_array_equal(dx, jnp.sum(lmul_forward(g, jnp.broadcast_to(y, g.shape), mantissa_bits=3), 1, keepdims=True))
    np.testing.assert_array_equal(dy, jnp.sum(lmul_forward(g, jnp.broadcast_to(x, g.shape), mantissa_bits=3), 0, keepdims=True))


def test_errors():
    one = jnp.ones(3, jnp.float32)
    with pytest.raises(TypeError, match="one dtype"):
        lmul(one, one.astype(jnp.bfloat16), mantissa_bits=3)
    with pytest.raises(TypeError, match="int32 is not one of"):
        lmul(jnp.ones(3, jnp.int32), jnp.ones(3, jnp.int32), mantissa_bits=3)
    with pytest.raises(ValueError, match=r"mantissa_bits must be an int in \[1, 7\]"):
        lmul(one.astype(jnp.bfloat16), one.astype(jnp.bfloat16), mantissa_bits=8)
    with pytest.raises(ValueError, match="offset 2\\^-4 needs at least 4 mantissa bits"):
        lmul(one.astype(jnp.float8_e4m3fn), one.astype(jnp.float8_e4m3fn), mantissa_bits=3, offset="wide")
    with pytest.raises(ValueError, match="semantics='exact'"):
        lmul(one, one, mantissa_bits=3, semantics="exact")

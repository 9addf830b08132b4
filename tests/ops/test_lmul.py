"""L-Mul's bit-level path against its float64 evaluation of the definition (``impl="reference"``):
every pair of fp8 values, random fp32 / bf16 / fp16 inputs for every mantissa width, special values
and known products (both paths), symmetries and gradients."""

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxattn.ops.lmul import FORMATS, lmul, lmul_forward, round_mantissa


def model_lmul(x, y, bits, semantics="bitwise", offset="paper"):
    """The oracle: the op's float64 evaluation of the definition (``impl="reference"``)."""
    return lmul_forward(x, y, mantissa_bits=bits, semantics=semantics, offset=offset, impl="reference")


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
    want = model_lmul(jnp.asarray(x), jnp.asarray(y), bits, semantics)
    assert got.dtype == want.dtype == jnp.dtype(dtype)
    assert_same_values(got, want)


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
        want = model_lmul(jnp.asarray(x), jnp.asarray(y), bits, semantics, offset)
        assert_same_values(got, want)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn])
def test_round_mantissa_is_round_to_nearest_even(dtype):
    x = random_values(dtype, 5000, seed=3)
    for bits in range(1, FORMATS[jnp.dtype(dtype)].mantissa + 1):
        got = round_mantissa(jnp.asarray(x), bits)
        want = round_mantissa(jnp.asarray(x), bits, impl="reference")  # float64 frexp / ldexp
        assert got.dtype == want.dtype
        # Normal inputs: XLA on CPU flushes subnormal operands of float arithmetic, the bit path keeps them.
        normal = np.abs(x.astype(np.float64)) >= float(ml_dtypes.finfo(dtype).smallest_normal)
        assert_same_values(np.asarray(got)[normal], np.asarray(want)[normal])


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_special_values(impl):
    nan, inf = float("nan"), float("inf")
    x = jnp.array([0.0, -0.0, 0.0, inf, inf, -inf, nan, 3e38, 1e-30, 1e-40, 2.0], jnp.float32)
    y = jnp.array([0.0, 5.0, -inf, 0.0, 2.0, 2.0, 1.0, 1e10, 1e-30, 1.0, -1e-40], jnp.float32)
    got = np.asarray(lmul(x, y, mantissa_bits=3, impl=impl))
    want = np.array([0.0, -0.0, nan, nan, inf, -inf, nan, inf, 0.0, 0.0, -0.0])
    assert_same_values(got, want)
    # e4m3 has no Inf: overflow saturates at its largest finite value, 448.
    big = jnp.array([448.0, -448.0], jnp.float8_e4m3fn)
    np.testing.assert_array_equal(np.asarray(lmul(big, big, mantissa_bits=3, impl=impl), np.float32), [448.0, 448.0])


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_round_mantissa_known_values(impl):
    # Ties to even: 1.0625 = 1 + 1/16 lies halfway between 1 and 1.125 (3 bits); 1.1875 between 1.125 and 1.25.
    x = jnp.array([1.0625, 1.1875, -1.9375, 3.3e38, 448.0], jnp.float32)  # 3.3e38 ~ 1.94 x 2^127
    np.testing.assert_array_equal(round_mantissa(x, 3, impl=impl), [1.0, 1.25, -2.0, float("inf"), 448.0])
    e4m3 = jnp.array([448.0, 416.0], jnp.float8_e4m3fn)  # 1.75 and 1.625 x 2^8: one bit keeps 1.5 x 2^8
    np.testing.assert_array_equal(np.asarray(round_mantissa(e4m3, 1, impl=impl), np.float32), [384.0, 384.0])


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_known_products(impl):
    x = jnp.array([1.5, -2.0, 1.75], jnp.float32)
    y = jnp.array([1.25, 3.0, 1.75], jnp.float32)
    # m = 3, l = 3: s = x_m + y_m + 1/8. 1.5 x 1.25: s = .875 -> 1.875; -2 x 3: s = .625 -> -6.5;
    # 1.75 x 1.75: s = 1.625 carries -> (1 + .625) 2^1 = 3.25 (bitwise), (1 + 1.625) = 2.625 (formula).
    np.testing.assert_array_equal(lmul(x, y, mantissa_bits=3, impl=impl), [1.875, -6.5, 3.25])
    np.testing.assert_array_equal(lmul(x, y, mantissa_bits=3, semantics="formula", impl=impl), [1.875, -6.5, 2.625])


def test_commutative_and_sign_symmetric():
    x, y = (jnp.asarray(random_values(np.float32, 2000, seed=s)) for s in (7, 8))
    for semantics in ("bitwise", "formula"):
        xy = np.asarray(lmul(x, y, mantissa_bits=4, semantics=semantics))
        assert_same_values(lmul(y, x, mantissa_bits=4, semantics=semantics), xy)
        assert_same_values(lmul(-x, y, mantissa_bits=4, semantics=semantics), -xy)
        assert_same_values(lmul(-x, -y, mantissa_bits=4, semantics=semantics), xy)


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_gradients(impl):
    x = jax.random.normal(jax.random.key(0), (5, 1))
    y = jax.random.normal(jax.random.key(1), (1, 4))
    g = jax.random.normal(jax.random.key(2), (5, 4))

    def vjp(backward):
        _, pullback = jax.vjp(lambda a, b: lmul(a, b, mantissa_bits=3, backward=backward, impl=impl), x, y)
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
    with pytest.raises(ValueError, match="lmul: impl='bits' is not one of 'auto', 'reference', 'xla'"):
        lmul(one, one, mantissa_bits=3, impl="bits")

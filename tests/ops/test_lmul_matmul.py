"""L-Matmul: lmul_dot_general against sums of element-wise L-Mul products for general dimension
numbers, the three-product formula path, blocking, Flax Dense, gradients; the Pallas kernel in
the interpreter (both backends) and lowered for TPU and CUDA."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops.lmul import lmul_forward
from jaxattn.ops.lmul_matmul import lmul_dot_general
from pallas_kernels.platform import INTERPRET_ENV


def explicit(a, b, semantics="bitwise", bits=3, offset="paper"):
    """``[G, M, K] x [G, K, N]``: every element product by element-wise L-Mul, summed in float64."""
    products = lmul_forward(a[:, :, :, None], b[:, None, :, :], mantissa_bits=bits, semantics=semantics, offset=offset)
    with np.errstate(invalid="ignore"):  # Inf - Inf = NaN, as in any IEEE sum
        return np.sum(np.asarray(products, np.float64), axis=2)


def operands(shape_a, shape_b, dtype=jnp.float32, seed=0):
    ka, kb = jax.random.split(jax.random.key(seed))
    return jax.random.normal(ka, shape_a).astype(dtype), jax.random.normal(kb, shape_b).astype(dtype)


def assert_sums_close(got, want):
    # Same fp32 terms, summed in another order: agreement to fp32 rounding of the sum.
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)))


@pytest.mark.parametrize("semantics, offset, bits", [("bitwise", "paper", 3), ("bitwise", "wide", 2),
                                                     ("formula", "paper", 4), ("bitwise", "paper", 23)])
def test_batched_matmul_is_the_sum_of_lmul_products(semantics, offset, bits):
    a, b = operands((3, 37, 29), (3, 29, 45))
    got = lmul_dot_general(a, b, (((2,), (1,)), ((0,), (0,))), mantissa_bits=bits, semantics=semantics,
                           offset=offset, impl="xla")
    assert got.shape == (3, 37, 45) and got.dtype == jnp.float32
    assert_sums_close(got, explicit(a, b, semantics, bits, offset))


def test_general_dimension_numbers_match_a_transposed_batched_product():
    # lhs [K1, B, M, K2], rhs [N, K2, B, K1]: batch B, contract (K1, K2).
    lhs, rhs = operands((3, 2, 5, 4), (6, 4, 2, 3))
    got = lmul_dot_general(lhs, rhs, (((0, 3), (3, 1)), ((1,), (2,))), mantissa_bits=3)
    a = jnp.transpose(lhs, (1, 2, 0, 3)).reshape(2, 5, 12)
    b = jnp.transpose(rhs, (2, 3, 1, 0)).reshape(2, 12, 6)
    assert got.shape == jax.lax.dot_general(lhs, rhs, (((0, 3), (3, 1)), ((1,), (2,)))).shape == (2, 5, 6)
    assert_sums_close(got, explicit(a, b))


@pytest.mark.parametrize("depth", [1, 5, 50])  # K below, not a multiple of and above the unroll of 4
def test_any_contraction_length(depth):
    a, b = operands((2, 9, depth), (2, depth, 7))
    got = lmul_dot_general(a, b, (((2,), (1,)), ((0,), (0,))), impl="xla")
    assert_sums_close(got, explicit(a, b))


def test_formula_three_products_equal_elementwise_formula_exactly_on_exact_sums():
    # Small integers times powers of two: every product and partial sum is exact in fp32.
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.integers(-8, 9, (1, 6, 5)) * 0.25, jnp.float32)
    b = jnp.asarray(rng.integers(-8, 9, (1, 5, 4)) * 0.5, jnp.float32)
    got = lmul_dot_general(a, b, (((2,), (1,)), ((0,), (0,))), mantissa_bits=3, semantics="formula")
    np.testing.assert_array_equal(np.asarray(got, np.float64), explicit(a, b, "formula"))


def test_inside_flax_dense_and_dense_general():
    x = jax.random.normal(jax.random.key(0), (4, 7, 6))
    dot = functools.partial(lmul_dot_general, mantissa_bits=3)
    dense = nn.Dense(5, dot_general=dot)
    params = dense.init(jax.random.key(1), x)["params"]
    got = dense.apply({"params": params}, x)
    want = explicit(x.reshape(1, 28, 6), params["kernel"][None]).reshape(4, 7, 5) + np.asarray(params["bias"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    general = nn.DenseGeneral((2, 3), axis=(-2, -1), dot_general=dot)
    variables = general.init(jax.random.key(2), x)
    assert general.apply(variables, x).shape == (4, 2, 3)


@pytest.mark.parametrize("backward", ["straight_through", "lmul"])
def test_gradients(backward):
    a, b = operands((1, 6, 5), (1, 5, 4))
    g = jax.random.normal(jax.random.key(3), (1, 6, 4))
    dims = (((2,), (1,)), ((0,), (0,)))
    _, pullback = jax.vjp(lambda a, b: lmul_dot_general(a, b, dims, mantissa_bits=3, backward=backward), a, b)
    da, db = pullback(g)
    if backward == "straight_through":  # the exact product's gradient
        np.testing.assert_allclose(da, g @ jnp.swapaxes(b, 1, 2), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(db, jnp.swapaxes(a, 1, 2) @ g, rtol=1e-5, atol=1e-6)
    else:  # the same two products as L-Matmuls
        assert_sums_close(da, explicit(g, jnp.swapaxes(b, 1, 2)))
        assert_sums_close(db, explicit(jnp.swapaxes(a, 1, 2), g))


@pytest.mark.parametrize("kernel", ["gpu", "tpu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float8_e4m3fn])
def test_pallas_kernel_matches_xla_in_the_interpreter(monkeypatch, kernel, dtype):
    monkeypatch.setenv(INTERPRET_ENV, kernel)
    a, b = operands((2, 150, 19), (2, 19, 140), dtype)  # M, N past one TPU block; K not a multiple of 8
    dims = (((2,), (1,)), ((0,), (0,)))
    want = lmul_dot_general(a, b, dims, mantissa_bits=3, impl="xla", preferred_element_type=jnp.float32)
    got = lmul_dot_general(a, b, dims, mantissa_bits=3, impl="pallas", preferred_element_type=jnp.float32)
    assert_sums_close(got, np.asarray(want, np.float64))


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
def test_pallas_kernel_lowers_for_accelerators(platform, marker):
    a, b = operands((2, 256, 64), (2, 64, 256), jnp.bfloat16)
    f = jax.jit(lambda a, b: lmul_dot_general(a, b, (((2,), (1,)), ((0,), (0,))), mantissa_bits=3, impl="pallas"))
    assert marker in f.trace(a, b).lower(lowering_platforms=(platform,)).as_text()


def test_errors():
    a = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="impl='cuda'"):
        lmul_dot_general(a, a.T, (((1,), (0,)), ((), ())), impl="cuda")
    with pytest.raises(ValueError, match="backward='exact'"):
        lmul_dot_general(a, a.T, (((1,), (0,)), ((), ())), backward="exact")
    with pytest.raises(TypeError, match="int32 is not one of"):
        lmul_dot_general(a.astype(jnp.int32), a.T.astype(jnp.int32), (((1,), (0,)), ((), ())))


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_special_values_in_a_product(monkeypatch, impl):
    monkeypatch.setenv(INTERPRET_ENV, "gpu")
    inf, nan = float("inf"), float("nan")
    a = jnp.array([[[1.0, 2.0, 0.0], [inf, 1.0, 1.0], [inf, 0.0, 1.0], [nan, 1.0, 1.0], [-inf, 1.0, 3e38],
                    [1e-30, 1e-20, 1.0]]], jnp.float32)
    b = jnp.array([[[1.5, -2.0], [2.0, inf], [1.0, 5.0]]], jnp.float32)
    got = lmul_dot_general(a, b, (((2,), (1,)), ((0,), (0,))), mantissa_bits=3, impl=impl)
    want = explicit(a, b)  # float64 sums of the element-wise products: Inf, -Inf, NaN as IEEE sums give them
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    np.testing.assert_allclose(np.asarray(got, np.float64)[finite], want[finite], rtol=1e-6)

"""Product arithmetic switched on a whole model: L-Mul or fp8 in every Dense and attention product."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn import LinearAttention, MultiHeadAttention
from jaxattn.nn.arithmetic import Arithmetic, fp8_dot_general, product_arithmetic
from jaxattn.nn.blocks import dense
from jaxattn.ops import apply_rotary, linear_attention, lmul_dot_general, softmax_attention
from jaxattn.ops.lmul import lmul_forward


class _TwoDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return dense(3, ("embed", "mlp"), "second")(jax.nn.relu(dense(5, ("embed", "mlp"), "first")(x)))


def test_dense_layers_follow_the_arithmetic_in_force():
    x = jax.random.normal(jax.random.key(0), (4, 6))
    model = _TwoDense()
    params = nn.unbox(model.init(jax.random.key(1), x))["params"]
    exact = model.apply({"params": params}, x)
    with product_arithmetic(Arithmetic(mantissa_bits=3)):
        approximate = model.apply({"params": params}, x)
    dot = lambda a, w: jnp.sum(lmul_forward(a[:, :, None], w[None], mantissa_bits=3), axis=1)  # noqa: E731
    hidden = jax.nn.relu(dot(x, params["first"]["kernel"]) + params["first"]["bias"])
    want = dot(hidden, params["second"]["kernel"]) + params["second"]["bias"]
    np.testing.assert_allclose(approximate, want, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(approximate - exact))) > 1e-3  # 3-bit L-Mul is not exact
    np.testing.assert_array_equal(model.apply({"params": params}, x), exact)  # outside the block: exact again


def test_attention_products_only():
    x = jax.random.normal(jax.random.key(2), (2, 7, 8))
    model = MultiHeadAttention(num_heads=2, head_dim=4)
    variables = model.init(jax.random.key(3), x)
    params = nn.unbox(variables)["params"]
    with product_arithmetic(Arithmetic(mantissa_bits=3, dense=False)):
        got = model.apply(variables, x)
    heads = lambda name: (x @ params[name]["kernel"] + params[name]["bias"]).reshape(2, 7, 2, 4)  # noqa: E731
    positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
    q, k = apply_rotary(heads("query"), positions), apply_rotary(heads("key"), positions)
    o = softmax_attention(q, k, heads("value"), impl="reference",
                          dot_general=lambda *a, **kw: lmul_dot_general(*a, mantissa_bits=3, **kw))
    want = o.reshape(2, 7, 8) @ params["out"]["kernel"] + params["out"]["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_linear_attention_routes_every_product_through_dot_general(impl):
    q, k, v = (jax.random.normal(key, (1, 20, 2, 4)) for key in jax.random.split(jax.random.key(4), 3))
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[2])
        return jax.lax.dot_general(*args, **kwargs)

    g = -jax.nn.softplus(jax.random.normal(jax.random.key(5), (1, 20, 2)))
    exact = linear_attention(q, k, v, g=g, impl=impl, chunk_size=8)
    np.testing.assert_allclose(linear_attention(q, k, v, g=g, impl=impl, chunk_size=8, dot_general=counting), exact,
                               rtol=1e-6, atol=1e-6)
    assert calls  # the op's products went through the given dot_general
    lmul = linear_attention(q, k, v, g=g, impl=impl, chunk_size=8,
                            dot_general=lambda *a, **kw: lmul_dot_general(*a, mantissa_bits=3, **kw))
    error = float(jnp.max(jnp.abs(lmul - exact)) / jnp.max(jnp.abs(exact)))
    assert 1e-3 < error < 0.2  # 3-bit L-Mul products: a few percent each, not exact, not garbage


def test_attention_mixers_change_only_under_attention_arithmetic():
    x = jax.random.normal(jax.random.key(6), (2, 9, 6))
    for model in (LinearAttention(num_heads=2, head_dim=4, chunk_size=4), MultiHeadAttention(num_heads=2, head_dim=4)):
        variables = model.init(jax.random.key(7), x)
        exact = model.apply(variables, x)
        with product_arithmetic(Arithmetic(dense=False, attention=False)):
            np.testing.assert_array_equal(model.apply(variables, x), exact)
        with product_arithmetic(Arithmetic(kind="fp8_e4m3", dense=False)):
            assert float(jnp.max(jnp.abs(model.apply(variables, x) - exact))) > 1e-4


def test_fp8_dot_general_rounds_operands_and_passes_gradients_through():
    a = jnp.array([[1.06, 300.0, 1000.0]])
    b = jnp.array([[1.0], [1.0], [1.0]])
    out = fp8_dot_general(a, b, (((1,), (0,)), ((), ())), fp8_dtype=jnp.float8_e4m3fn)
    np.testing.assert_array_equal(out, [[1.0 + 288.0 + 448.0]])  # e4m3: 1.0625 -> 1, 300 -> 288, saturate at 448
    grad = jax.grad(lambda a: jnp.sum(fp8_dot_general(a, b, (((1,), (0,)), ((), ())), fp8_dtype=jnp.float8_e4m3fn)))(a)
    np.testing.assert_array_equal(grad, jnp.ones_like(a))


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind='int4'"):
        Arithmetic(kind="int4")

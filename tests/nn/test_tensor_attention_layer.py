"""TensorAttention: the op between projections, decoding equals the parallel pass (causal and
windowed caches), the bias variant contains softmax attention, shared k2/v2. Packed segments:
``tests/nn/test_attention_layers.py``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn import MIXERS, TensorAttention
from jaxattn.ops import softmax_attention, tensor_attention
from tests.nn.test_attention_layers import relative_error, run_steps


def test_is_the_op_between_projections():
    model = TensorAttention(num_heads=2, head_dim=3, causal=True)
    x = jax.random.normal(jax.random.key(0), (1, 6, 4))
    params = nn.unbox(model.init(jax.random.key(1), x))["params"]
    heads = lambda name: (x @ params[name]["kernel"] + params[name]["bias"]).reshape(1, 6, 2, 3)  # noqa: E731
    o = tensor_attention(*map(heads, ("query", "key1", "key2", "value1", "value2")), causal=True, impl="reference")
    expected = o.reshape(1, 6, 6) @ params["out"]["kernel"] + params["out"]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [dict(causal=True, max_decode_length=16), dict(window=(3, 5)), dict(window=(4, 2), shared_k2v2=True, bias=True)],
    ids=["causal", "window", "window-shared-bias"],
)
def test_step_equals_call(options):
    model = TensorAttention(num_heads=2, head_dim=4, **options)
    x = jax.random.normal(jax.random.key(2), (2, 11, 6))
    variables = model.init(jax.random.key(3), x)
    assert relative_error(run_steps(model, variables, x), model.apply(variables, x)) < 1e-5


def test_cache_holds_the_window_only():
    carry = TensorAttention(num_heads=2, head_dim=4, window=(3, 5)).init_carry(2)
    assert carry.k1.shape == carry.v1.shape == (2, 3, 2, 4)
    assert carry.k2.shape == carry.v2.shape == (2, 5, 2, 4)


def test_bias_variant_with_zero_second_projections_is_softmax_attention():
    """``k2 = 1/D``, ``v2 = 1``: the logit of (j, k) is ``scale q.k1_j / D`` for every k, so the
    layer is softmax attention over j with scale ``D^-1.5``."""
    model = TensorAttention(num_heads=2, head_dim=4, causal=True, bias=True, shared_k2v2=True)
    x = jax.random.normal(jax.random.key(4), (2, 7, 6))
    params = nn.unbox(model.init(jax.random.key(5), x))["params"]
    assert params["key2"]["kernel"].shape == (6, 4) and params["query"]["kernel"].shape == (6, 8)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if path[0].key in ("key2", "value2") else a, params
    )
    heads = lambda name: (x @ params[name]["kernel"] + params[name]["bias"]).reshape(2, 7, 2, 4)  # noqa: E731
    o = softmax_attention(heads("query"), heads("key1"), heads("value1"), causal=True, scale=4**-1.5, impl="reference")
    expected = o.reshape(2, 7, 8) @ params["out"]["kernel"] + params["out"]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


def test_registered_and_errors():
    assert MIXERS["tensor_attention"] is TensorAttention
    model = TensorAttention(num_heads=2, head_dim=4, causal=False)
    x = jnp.zeros((1, 3, 6))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="TensorAttention.step needs a causal mixer, but TensorAttention with causal=False"):
        model.apply(variables, model.init_carry(1), x[:, 0], method=model.step)
    with pytest.raises(ValueError, match=r"x must be \[B, L, d_model\]"):
        model.apply(variables, x[0])

"""LinearAttention and MultiHeadAttention layers: step equals __call__, segments, options, errors."""

from decimal import Decimal, getcontext

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn import LinearAttention, MultiHeadAttention, TensorAttention
from jaxattn.nn.linear_attention import FEATURE_MAP_NAMES, GATES, MIN_SIGNED_TRANSITION, signed_data_gate
from jaxattn.ops import softmax_attention


def run_steps(model, variables, x):
    """``model.step`` over every token of ``x [B, L, H]`` from ``init_carry``: ``[B, L, H]``."""
    carry = model.init_carry(x.shape[0], features=x.shape[-1])
    outputs = []
    for t in range(x.shape[1]):
        carry, y_t = model.apply(variables, carry, x[:, t], method=model.step)
        outputs.append(y_t)
    return jnp.stack(outputs, axis=1)


def relative_error(got, want):
    return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


@pytest.mark.parametrize("feature_map", FEATURE_MAP_NAMES)
@pytest.mark.parametrize("gate", GATES)
def test_linear_attention_step_equals_call(feature_map, gate):
    model = LinearAttention(
        num_heads=2, head_dim=4, feature_map=feature_map, gate=gate, normalize=feature_map != "identity",
        output_norm=True, output_gate=True, chunk_size=4, short_conv=3 if gate == "data" else 0,
        rotary=gate == "decay",
    )
    x = jax.random.normal(jax.random.key(0), (2, 11, 6))
    variables = model.init(jax.random.key(1), x)
    assert relative_error(run_steps(model, variables, x), model.apply(variables, x)) < 1e-5


def signed_model(**options):
    return LinearAttention(num_heads=2, head_dim=4, gate="data", negative_eigenvalues=True, gate_temperature=1.0,
                           chunk_size=4, **options)


def test_negative_eigenvalues_step_equals_call():
    model = signed_model(short_conv=3, output_norm=True, output_gate=True)
    x = jax.random.normal(jax.random.key(0), (2, 11, 6))
    variables = jax.jit(model.init)(jax.random.key(1), x)
    gate = nn.unbox(variables["params"]["gate"])
    _, negative = signed_data_gate(x @ gate["kernel"] + gate["bias"], model.gate_temperature)
    assert 0.1 < float(jnp.mean(negative)) < 0.9  # both signs occur
    step = jax.jit(lambda carry, x_t: model.apply(variables, carry, x_t, method=model.step))
    carry, outputs = model.init_carry(2), []
    for t in range(x.shape[1]):
        carry, y_t = step(carry, x[:, t])
        outputs.append(y_t)
    assert relative_error(jnp.stack(outputs, axis=1), jax.jit(model.apply)(variables, x)) < 1e-5
    assert model.init_carry(2).state.shape == (2, 2, 4, 4)


def test_signed_data_gate_is_two_sigmoid_minus_one():
    """``(log |a|, a < 0)`` of ``a = 2 sigmoid(z)^(1/tau) - 1`` against 50-digit decimals, from ``a``
    near -1 through 0 to ``a`` near 1, with finite gradients also where ``a = 0``."""
    getcontext().prec = 50
    z = np.concatenate([np.linspace(-40.0, 25.0, 66), [0.0, 1e-3, -1e-3]]).astype(np.float32)
    for temperature in (1.0, 16.0):
        log_magnitude, negative = signed_data_gate(jnp.asarray(z), temperature)
        for z_i, got_log, got_negative in zip(z, np.asarray(log_magnitude), np.asarray(negative)):
            sigmoid = 1 / (1 + (-Decimal(float(z_i))).exp())
            a = 2 * (sigmoid.ln() / Decimal(temperature)).exp() - 1
            want = float(max(abs(a), Decimal(MIN_SIGNED_TRANSITION)).ln())
            if abs(a) > Decimal("1e-4"):  # nearer 0 the fp32 z itself decides |a| to few digits
                assert got_negative == (a < 0), (z_i, temperature)
                assert abs(got_log - want) <= 2e-5 * abs(want), (z_i, temperature, got_log, want)
        gradient = jax.grad(lambda z: jnp.sum(signed_data_gate(z, temperature)[0]))(jnp.asarray(z))
        assert bool(jnp.all(jnp.isfinite(gradient)))
    # a = 0 (z = 0, tau = 1; fp32 rounding leaves |a| ~ 1e-6): at most a little above the floor, and
    # finite, with a finite gradient.
    log_zero, _ = signed_data_gate(jnp.zeros(()), 1.0)
    assert np.log(MIN_SIGNED_TRANSITION) <= float(log_zero) < np.log(4 * MIN_SIGNED_TRANSITION)
    assert np.isfinite(jax.grad(lambda z: signed_data_gate(z, 1.0)[0])(jnp.zeros(())))


def test_negative_eigenvalues_under_a_sequence_mesh_equal_one_device():
    """LASP-2 takes no signs: the layer folds them into q and k, the same outputs as one device."""
    from jax.sharding import AxisType

    from jaxattn.parallel import SEQUENCE_AXIS

    model = signed_model()
    x = jax.random.normal(jax.random.key(2), (2, 16, 6))
    segment_ids = (jnp.arange(16) < jnp.array([[16], [9]])).astype(jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(3), x)
    apply = lambda variables, x: model.apply(variables, x, segment_ids=segment_ids)  # noqa: E731
    want = jax.jit(apply)(variables, x)
    with jax.set_mesh(jax.make_mesh((2, 4), ("data", SEQUENCE_AXIS), axis_types=(AxisType.Auto,) * 2)):
        compiled = jax.jit(apply).lower(variables, x).compile()
        got = compiled(variables, x)
    assert "all-gather" in compiled.as_text()  # LASP-2 gathers the shards' states
    assert relative_error(got, want) < 1e-5


@pytest.mark.parametrize("short_conv", [0, 3])
def test_multi_head_attention_step_equals_call_until_the_cache_is_full(short_conv):
    """A 16-token cache decodes 16 tokens exactly, then returns NaN (never a plausible wrong value)."""
    model = MultiHeadAttention(num_heads=2, head_dim=4, max_decode_length=16, short_conv=short_conv)
    x = jax.random.normal(jax.random.key(0), (2, 20, 6))
    variables = model.init(jax.random.key(1), x)
    steps = run_steps(model, variables, x)
    assert relative_error(steps[:, :16], model.apply(variables, x)[:, :16]) < 1e-5
    assert bool(jnp.all(jnp.isnan(steps[:, 16:])))
    assert model.decode_capacity == 16


def test_multi_head_attention_is_the_op_between_projections():
    model = MultiHeadAttention(num_heads=2, head_dim=3, causal=False, rotary=False)
    x = jax.random.normal(jax.random.key(2), (1, 5, 4))
    params = nn.unbox(model.init(jax.random.key(3), x))["params"]
    heads = lambda name: (x @ params[name]["kernel"] + params[name]["bias"]).reshape(1, 5, 2, 3)  # noqa: E731
    o = softmax_attention(heads("query"), heads("key"), heads("value"), causal=False, impl="reference")
    expected = o.reshape(1, 5, 6) @ params["out"]["kernel"] + params["out"]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "model",
    [
        LinearAttention(num_heads=2, head_dim=4, gate="data", chunk_size=4, short_conv=3),
        LinearAttention(num_heads=2, head_dim=4, causal=False, chunk_size=4),
        MultiHeadAttention(num_heads=2, head_dim=4, short_conv=3),
        MultiHeadAttention(num_heads=2, head_dim=4, causal=False),
        TensorAttention(num_heads=2, head_dim=4),
        TensorAttention(num_heads=2, head_dim=4, causal=False),
    ],
    ids=["linear-gated", "linear-bidirectional", "softmax-short-conv", "softmax-bidirectional", "tensor-causal",
         "tensor-bidirectional"],
)
def test_segments_are_independent(model):
    x = jax.random.normal(jax.random.key(0), (1, 10, 6))
    variables = model.init(jax.random.key(1), x)
    packed = model.apply(variables, x, segment_ids=jnp.array([[0] * 4 + [1] * 6]))
    np.testing.assert_allclose(packed[:, :4], model.apply(variables, x[:, :4]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[:, 4:], model.apply(variables, x[:, 4:]), rtol=1e-5, atol=1e-5)


def test_hedgehog_map_starts_as_softmax_of_identity_features():
    model = LinearAttention(num_heads=2, head_dim=3, feature_map="hedgehog")
    params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 2, 4))))["params"]
    np.testing.assert_allclose(params["query_map"]["weight"], np.broadcast_to(np.eye(3), (2, 3, 3)))
    assert model.feature_dim == 6
    assert model.init_carry(5).state.shape == (5, 2, 6, 3)
    assert model.clone(normalize=True).init_carry(5).state.shape == (5, 2, 6, 4)  # the normaliser's column


def test_decay_gate_is_retnet_schedule():
    from jaxattn.nn.linear_attention import retnet_log_decay

    np.testing.assert_allclose(np.exp(retnet_log_decay(3)), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128], rtol=1e-6)


def test_option_errors():
    x = jnp.ones((1, 3, 4))
    with pytest.raises(ValueError, match="feature_map='cosine'"):
        LinearAttention(feature_map="cosine").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="gate='sigmoid'"):
        LinearAttention(gate="sigmoid").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="a gate needs causal=True"):
        LinearAttention(gate="decay", causal=False).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="negative_eigenvalues=True needs gate='data', got gate='decay'"):
        LinearAttention(gate="decay", negative_eigenvalues=True).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"negative_eigenvalues=True cannot be normalised \(normalize=True\)"):
        LinearAttention(gate="data", negative_eigenvalues=True, normalize=True).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="normalize=True needs positive features; feature_map='identity'"):
        LinearAttention(feature_map="identity", normalize=True).init(jax.random.key(0), x)
    for model in (MultiHeadAttention(causal=False), LinearAttention(causal=False)):
        variables = model.init(jax.random.key(0), x)
        with pytest.raises(ValueError, match=r"\.step needs a causal mixer, but .* with causal=False"):
            model.apply(variables, model.init_carry(1), x[:, 0], method=model.step)

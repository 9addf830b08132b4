"""DeltaNet: step equals __call__ in every configuration, beta's range with and without negative
eigenvalues, every parameter is named for sharding, and a classifier and a language model train
with it. The registry-wide
causality and decoding tests run its variants too (``tests/nn/test_mixer_registry.py``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxattn.models import LanguageModel, SequenceClassifier
from jaxattn.nn import DeltaNet

# (householder_steps, negative_eigenvalues, gated, short_conv, output_gate)
CONFIGURATIONS = [(1, False, False, 4, False), (1, True, True, 0, True), (2, True, True, 4, False),
                  (3, False, False, 2, True)]


@pytest.mark.parametrize("steps, negative, gated, conv, output_gate", CONFIGURATIONS)
def test_step_equals_call(steps, negative, gated, conv, output_gate):
    layer = DeltaNet(num_heads=2, head_dim=4, value_dim=6, householder_steps=steps, negative_eigenvalues=negative,
                     gated=gated, short_conv=conv, output_gate=output_gate, chunk_size=4)
    x = jax.random.normal(jax.random.key(0), (2, 11, 8))
    variables = layer.init(jax.random.key(1), x)
    want = layer.apply(variables, x)
    step = jax.jit(lambda carry, x_t: layer.apply(variables, carry, x_t, method=layer.step))
    carry = layer.init_carry(2, 8)
    got = []
    for t in range(x.shape[1]):
        carry, y_t = step(carry, x[:, t])
        got.append(y_t)
    np.testing.assert_allclose(jnp.stack(got, axis=1), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("negative, upper", [(False, 1.0), (True, 2.0)])
def test_beta_range(negative, upper):
    """``beta = sigmoid`` or ``2 sigmoid`` of its projection: with a large bias it reaches the top."""
    layer = DeltaNet(num_heads=2, head_dim=4, negative_eigenvalues=negative)
    x = jax.random.normal(jax.random.key(2), (1, 5, 8))
    params = layer.init(jax.random.key(3), x)
    seen = {}  # the step sizes the layer hands the op, read back through flax's interceptor

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.module.name == "beta":
            seen["beta"] = (2.0 if negative else 1.0) * jax.nn.sigmoid(out)
        return out

    with nn.intercept_methods(record):
        layer.apply(params, x)
    assert float(seen["beta"].max()) <= upper and float(seen["beta"].min()) >= 0.0
    bias = params["params"]["beta"]["bias"]
    big = jax.tree.map(lambda a: a, params)
    big["params"]["beta"]["bias"] = nn.Partitioned(jnp.full_like(bias.value, 30.0), bias.names)
    with nn.intercept_methods(record):
        layer.apply(big, x)
    np.testing.assert_allclose(seen["beta"], upper, rtol=1e-6)


def test_every_parameter_has_logical_axes():
    layer = DeltaNet(num_heads=2, head_dim=4, householder_steps=2, gated=True, output_gate=True)
    variables = layer.init(jax.random.key(4), jnp.zeros((1, 3, 8)))
    leaves = jax.tree.leaves(variables["params"], is_leaf=lambda a: isinstance(a, nn.Partitioned))
    assert leaves and all(isinstance(a, nn.Partitioned) and len(a.names) == a.value.ndim for a in leaves)
    names = {"/".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(nn.unbox(variables["params"]))[0]}
    assert {"log_a", "dt_bias", "beta/kernel", "gate/kernel", "output_gate/kernel", "short_conv/kernel"} <= names


def train(model, inputs, targets, loss_fn, steps=40):
    variables = model.init(jax.random.key(5), inputs)
    optimizer = optax.adam(1e-2)
    state = optimizer.init(variables)

    @jax.jit
    def update(variables, state):
        loss, grads = jax.value_and_grad(lambda v: loss_fn(model.apply(v, inputs), targets))(variables)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(variables, updates), state, loss

    losses = []
    for _ in range(steps):
        variables, state, loss = update(variables, state)
        losses.append(float(loss))
    return variables, losses


def test_classifier_learns_parity_of_a_short_word():
    """A one-layer classifier with negative eigenvalues fits the parity of 8 bits (train set)."""
    bits = jax.random.bernoulli(jax.random.key(6), 0.5, (64, 8)).astype(jnp.int32)
    targets = jnp.sum(bits, axis=1) % 2
    model = SequenceClassifier(num_classes=2, d_model=16, num_layers=1, mixer="delta_net", vocab_size=3,
                               mixer_options=dict(num_heads=2, head_dim=8, negative_eigenvalues=True), pooling="last")
    loss = lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()  # noqa: E731
    _, losses = train(model, bits + 1, targets, loss, steps=60)
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses[::10]


def test_language_model_trains():
    """Generation with it: ``tests/models/test_language_model.py``."""
    model = LanguageModel(vocab_size=11, d_model=16, num_layers=1, mixer="delta_net",
                          mixer_options=dict(num_heads=2, head_dim=8, gated=True, chunk_size=8))
    tokens = jnp.tile(jnp.arange(10)[None], (4, 2))  # a cycle to learn
    loss = lambda logits, t: optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], t[:, 1:]).mean()  # noqa: E731
    _, losses = train(model, tokens, tokens, loss)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_bad_options_are_named():
    x = jnp.zeros((1, 3, 8))
    with pytest.raises(ValueError, match="householder_steps"):
        DeltaNet(householder_steps=0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="x must be"):
        DeltaNet().init(jax.random.key(0), x[0])

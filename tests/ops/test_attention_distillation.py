"""Hedgehog distillation loss: its value, its minimum, and that training a map lowers it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxattn.ops import attention_distillation_loss, feature_maps
from jaxattn.ops.softmax_attention import softmax_attention_weights


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_value_against_explicit_cross_entropy(impl):
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 6, 2, 4))
    phi_q, phi_k = jax.nn.elu(q) + 1, jax.nn.elu(k) + 1
    loss = attention_distillation_loss(q, k, phi_q, phi_k, eps=0.0, impl=impl)
    teacher = np.asarray(softmax_attention_weights(q, k), np.float64)
    scores = np.tril(np.einsum("bihf,bjhf->bhij", np.asarray(phi_q, np.float64), np.asarray(phi_k, np.float64)))
    student = scores / scores.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = -np.mean(np.sum(np.where(teacher > 0, teacher * np.log(student), 0.0), -1))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_exp_features_reach_the_teacher_entropy(impl):
    """Features that reproduce the teacher exactly (its rows as queries, one-hot keys): the loss is
    then the teacher's entropy, the minimum of a cross-entropy."""
    q = jax.random.normal(jax.random.key(1), (1, 5, 1, 3))
    k = jax.random.normal(jax.random.key(2), (1, 5, 1, 3))
    teacher = softmax_attention_weights(q, k)[0, 0]  # [T, T]
    phi_q = teacher[None, :, None, :]  # row i of the teacher as query features
    phi_k = jnp.eye(5)[None, :, None, :]  # one-hot keys
    loss = attention_distillation_loss(q, k, phi_q, phi_k, eps=0.0, impl=impl)
    entropy = -jnp.mean(jnp.sum(jnp.where(teacher > 0, teacher * jnp.log(teacher), 0.0), -1))
    np.testing.assert_allclose(float(loss), float(entropy), rtol=1e-5)


def test_training_a_hedgehog_map_lowers_the_loss():
    q, k = 2.0 * jax.random.normal(jax.random.key(3), (2, 2, 16, 1, 4))
    weight = jnp.eye(4)

    def loss(w):
        return attention_distillation_loss(
            q, k, feature_maps.hedgehog_softmax(q @ w), feature_maps.hedgehog_softmax(k @ w)
        )

    optimizer = optax.adam(0.05)
    opt_state = optimizer.init(weight)
    start = float(loss(weight))
    for _ in range(100):
        grads = jax.grad(loss)(weight)
        updates, opt_state = optimizer.update(grads, opt_state)
        weight = optax.apply_updates(weight, updates)
    assert float(loss(weight)) < 0.8 * start


def test_bidirectional_value_and_odd_sizes():
    """Without the causal mask every query sees every key; 7 tokens, 3 heads, D = 5, F = 3."""
    q, k = jax.random.normal(jax.random.key(4), (2, 2, 7, 3, 5))
    phi_q, phi_k = jax.nn.softplus(q[..., :3]), jax.nn.softplus(k[..., :3])
    teacher = np.asarray(softmax_attention_weights(q, k, causal=False), np.float64)
    scores = np.einsum("bihf,bjhf->bhij", np.asarray(phi_q, np.float64), np.asarray(phi_k, np.float64))
    expected = -np.mean(np.sum(teacher * np.log(scores / scores.sum(-1, keepdims=True)), -1))
    for impl in ("xla", "reference"):
        loss = attention_distillation_loss(q, k, phi_q, phi_k, causal=False, eps=0.0, impl=impl)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5, err_msg=impl)

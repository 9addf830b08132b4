"""Rotary embedding and the short causal convolution against direct formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops.rotary import apply_rotary
from jaxattn.ops.short_conv import causal_conv1d


def test_rotary_scores_depend_on_relative_position_only():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))
    score = lambda m, n: float(jnp.sum(apply_rotary(q, jnp.array([m])) * apply_rotary(k, jnp.array([n]))))  # noqa: E731
    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5)
    assert score(0, 0) == pytest.approx(float(jnp.sum(q * k)), rel=1e-6)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)


def test_rotary_is_a_rotation_of_each_pair():
    x = jax.random.normal(jax.random.key(1), (1, 3, 2, 4))
    y = apply_rotary(x, jnp.arange(3))
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-6)
    angle = 2 * 10_000.0 ** (-0.5)  # position 2, second frequency (i = 1 of D/2 = 2)
    expected = x[0, 2, 0, 1] * np.cos(angle) - x[0, 2, 0, 3] * np.sin(angle)
    assert float(y[0, 2, 0, 1]) == pytest.approx(float(expected), rel=1e-5)


def test_causal_conv_matches_direct_sum_and_continues_from_history():
    x = jax.random.normal(jax.random.key(2), (2, 9, 3))
    kernel = jax.random.normal(jax.random.key(3), (4, 3))
    y, history = causal_conv1d(x, kernel)
    expected = np.zeros((2, 9, 3))
    for t in range(9):
        for w in range(4):
            if t - w >= 0:
                expected[:, t] += np.asarray(kernel[w]) * np.asarray(x[:, t - w])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history, x[:, -3:])
    first, state = causal_conv1d(x[:, :5], kernel)
    second, _ = causal_conv1d(x[:, 5:], kernel, history=state)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), y, rtol=1e-5, atol=1e-6)


def test_causal_conv_stays_within_segments():
    x = jax.random.normal(jax.random.key(4), (1, 8, 2))
    kernel = jax.random.normal(jax.random.key(5), (3, 2))
    packed, _ = causal_conv1d(x, kernel, segment_ids=jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]]))
    np.testing.assert_allclose(packed[:, 3:], causal_conv1d(x[:, 3:], kernel)[0], rtol=1e-6)
    np.testing.assert_allclose(packed[:, :3], causal_conv1d(x[:, :3], kernel)[0], rtol=1e-6)

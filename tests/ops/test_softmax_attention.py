"""softmax_attention: XLA path against the explicit reference, masks, KV-cache alignment, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import softmax_attention


def inputs(seed, batch=2, length=11, heads=3, dim=8):
    return jax.random.normal(jax.random.key(seed), (3, batch, length, heads, dim))


def numpy_attention(q, k, v, scale, causal):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if causal:
        offset = k.shape[1] - q.shape[1]
        scores = np.where(np.tril(np.ones(scores.shape[-2:], bool), k=offset), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


@pytest.mark.parametrize("impl", ["reference", "xla", "pallas"])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_numpy(impl, causal):
    q, k, v = inputs(0)
    np.testing.assert_allclose(
        softmax_attention(q, k, v, causal=causal, impl=impl), numpy_attention(q, k, v, 8**-0.5, causal), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("impl", ["reference", "xla", "pallas"])
def test_kv_cache_queries_align_with_the_last_keys(impl):
    q, k, v = inputs(1)
    full = softmax_attention(q, k, v, impl="reference")
    np.testing.assert_allclose(softmax_attention(q[:, -3:], k, v, impl=impl), full[:, -3:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "xla", "pallas"])
def test_segments_attend_within_themselves(impl):
    q, k, v = inputs(2, batch=1)
    segment_ids = jnp.array([[0] * 4 + [1] * 7])
    packed = softmax_attention(q, k, v, segment_ids=segment_ids, impl=impl)
    np.testing.assert_allclose(packed[:, :4], softmax_attention(q[:, :4], k[:, :4], v[:, :4], impl="reference"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[:, 4:], softmax_attention(q[:, 4:], k[:, 4:], v[:, 4:], impl="reference"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_kv_lengths_ignore_the_keys_past_them(impl):
    q, k, v = inputs(6)
    lengths = jnp.array([4, 9])
    got = softmax_attention(q[:, :1], k, v, causal=False, kv_lengths=lengths, impl=impl)
    for b, n in enumerate([4, 9]):
        want = numpy_attention(q[b : b + 1, :1], k[b : b + 1, :n], v[b : b + 1, :n], 8**-0.5, False)
        np.testing.assert_allclose(got[b : b + 1], want, rtol=1e-5, atol=1e-5)


def test_gradients_agree():
    q, k, v = inputs(3)
    weights = jax.random.normal(jax.random.key(4), v.shape)
    grads = {
        impl: jax.grad(lambda q, k, v: jnp.sum(softmax_attention(q, k, v, impl=impl) * weights), argnums=(0, 1, 2))(q, k, v)
        for impl in ("reference", "xla")
    }
    for got, want in zip(grads["xla"], grads["reference"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bad_shapes():
    q, k, v = inputs(5)
    with pytest.raises(ValueError, match=r"`q` must be \[B, T, H, D\]"):
        softmax_attention(q[0], k, v)
    with pytest.raises(ValueError, match="incompatible shapes"):
        softmax_attention(q[..., :4], k, v)
    with pytest.raises(ValueError, match="segment_ids"):
        softmax_attention(q[:, :3], k, v, segment_ids=jnp.zeros((2, 3), jnp.int32))

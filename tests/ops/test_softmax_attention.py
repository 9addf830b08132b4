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


@pytest.mark.parametrize("impl", ["reference", "xla", "pallas"])
@pytest.mark.parametrize("value_dim", [5, 12])
def test_value_head_size_may_differ_from_the_key_head_size(impl, value_dim):
    q, k, _ = inputs(7)
    v = jax.random.normal(jax.random.key(8), (*k.shape[:3], value_dim))
    weights = jax.random.normal(jax.random.key(9), (*q.shape[:3], value_dim))
    np.testing.assert_allclose(softmax_attention(q, k, v, impl=impl), numpy_attention(q, k, v, 8**-0.5, True),
                               rtol=1e-5, atol=1e-5)
    grads = {
        name: jax.grad(lambda q, k, v: jnp.sum(softmax_attention(q, k, v, impl=name) * weights), argnums=(0, 1, 2))(q, k, v)
        for name in ("reference", impl)
    }
    for got, want in zip(grads[impl], grads["reference"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


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


# ----------------------------------------------------------------------------- a query shard against all keys


OFFSET_Q, OFFSET, OFFSET_K, OFFSET_D = 5, 7, 19, 12  # queries 7 .. 11 of 19 keys
KEY_SEGMENTS = np.array([[0] * 6 + [1] * 4 + [2] * 9, [3] * 10 + [1] * 9])  # boundaries inside the query shard


def loop_attention(q, k, v, scale, causal, query_offset, query_segments=None, key_segments=None):
    """The oracle: each query's softmax over the keys it may see, one query at a time in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros((*q.shape[:3], v.shape[-1]))
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            keys = [j for j in range(k.shape[1])
                    if (not causal or j <= query_offset + i)
                    and (query_segments is None or query_segments[b, i] == key_segments[b, j])]
            for h in range(q.shape[2]):
                scores = scale * k[b, keys, h] @ q[b, i, h]
                weights = np.exp(scores - scores.max())
                out[b, i, h] = weights / weights.sum() @ v[b, keys, h]
    return out


def offset_inputs(seed=7):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (2, OFFSET_Q, 3, OFFSET_D))
    k = jax.random.normal(keys[1], (2, OFFSET_K, 3, OFFSET_D))
    v = jax.random.normal(keys[2], (2, OFFSET_K, 3, OFFSET_D))
    return q, k, v


OFFSET_CASES = {
    "causal": dict(causal=True),
    "causal_segments": dict(causal=True, segments=True),
    "noncausal_segments": dict(causal=False, segments=True),
}


def offset_call(case, impl, traced_offset=False):
    causal, segments = OFFSET_CASES[case]["causal"], OFFSET_CASES[case].get("segments", False)
    options = dict(segment_ids=jnp.asarray(KEY_SEGMENTS[:, OFFSET:OFFSET + OFFSET_Q]),
                   kv_segment_ids=jnp.asarray(KEY_SEGMENTS)) if segments else {}

    def attend(q, k, v, offset):
        return softmax_attention(q, k, v, causal=causal, query_offset=offset, impl=impl, **options)

    if traced_offset:  # the offset a shard computes from its index: an int32 tracer
        return lambda q, k, v: jax.jit(attend)(q, k, v, jnp.int32(OFFSET))
    return lambda q, k, v: attend(q, k, v, OFFSET)


def offset_oracle(case, q, k, v):
    segments = OFFSET_CASES[case].get("segments", False)
    return loop_attention(q, k, v, OFFSET_D**-0.5, OFFSET_CASES[case]["causal"], OFFSET,
                          KEY_SEGMENTS[:, OFFSET:OFFSET + OFFSET_Q] if segments else None,
                          KEY_SEGMENTS if segments else None)


@pytest.mark.parametrize("traced_offset", [False, True])
@pytest.mark.parametrize("impl", ["reference", "xla"])
@pytest.mark.parametrize("case", OFFSET_CASES)
def test_query_offset_and_key_segments_match_the_loop(case, impl, traced_offset):
    q, k, v = offset_inputs()
    got = offset_call(case, impl, traced_offset)(q, k, v)
    np.testing.assert_allclose(got, offset_oracle(case, q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "xla"])
@pytest.mark.parametrize("case", OFFSET_CASES)
def test_query_offset_gradients_match_the_loop_by_finite_differences(case, impl):
    """Gradients of q, k, v against the reference's autodiff (itself checked below by central
    differences of the float64 oracle along one random direction each)."""
    q, k, v = offset_inputs(8)
    weights = jax.random.normal(jax.random.key(9), q.shape)
    loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * weights)  # noqa: E731
    got = jax.grad(loss(offset_call(case, impl, traced_offset=True)), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss(offset_call(case, "reference")), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    if impl != "reference":
        return
    oracle = lambda q, k, v: float(np.sum(offset_oracle(case, q, k, v) * np.asarray(weights, np.float64)))  # noqa: E731
    inputs = [np.asarray(a, np.float64) for a in (q, k, v)]
    step = 1e-4
    for index, grad in enumerate(got):
        direction = np.asarray(jax.random.normal(jax.random.key(10 + index), grad.shape), np.float64)
        plus, minus = list(inputs), list(inputs)
        plus[index] = inputs[index] + step * direction
        minus[index] = inputs[index] - step * direction
        numeric = (oracle(*plus) - oracle(*minus)) / (2 * step)
        np.testing.assert_allclose(float(jnp.sum(grad * direction)), numeric, rtol=1e-4, atol=1e-4)


def test_query_offset_none_is_the_kv_cache_alignment():
    q, k, v = offset_inputs(11)
    np.testing.assert_allclose(softmax_attention(q, k, v, query_offset=OFFSET_K - OFFSET_Q, impl="xla"),
                               softmax_attention(q, k, v, impl="reference"), rtol=1e-5, atol=1e-5)


def test_pallas_refuses_query_offset_and_key_segments_and_auto_falls_back():
    q, k, v = offset_inputs(12)
    ids = dict(segment_ids=jnp.asarray(KEY_SEGMENTS[:, :OFFSET_Q]), kv_segment_ids=jnp.asarray(KEY_SEGMENTS))
    with pytest.raises(ValueError, match="impl='pallas' does not support query_offset; use impl='xla'"):
        softmax_attention(q, k, v, query_offset=OFFSET, impl="pallas")
    with pytest.raises(ValueError, match="does not support kv_segment_ids"):
        softmax_attention(q, k, v, impl="pallas", **ids)
    np.testing.assert_allclose(softmax_attention(q, k, v, query_offset=OFFSET, impl="auto"),
                               softmax_attention(q, k, v, query_offset=OFFSET, impl="xla"), rtol=1e-6, atol=1e-6)


def test_query_offset_and_key_segment_errors():
    q, k, v = offset_inputs(13)
    with pytest.raises(ValueError, match=r"`query_offset` must lie in \[0, Tk - Tq\] = \[0, 14\].*got 15"):
        softmax_attention(q, k, v, query_offset=15)
    with pytest.raises(ValueError, match="`query_offset` must lie in"):
        softmax_attention(q, k, v, query_offset=-1)
    with pytest.raises(TypeError, match="`query_offset` must be an int"):
        softmax_attention(q, k, v, query_offset=2.0)
    with pytest.raises(TypeError, match="`query_offset` must be an int"):
        softmax_attention(q, k, v, query_offset=True)
    with pytest.raises(ValueError, match="`query_offset` must be a scalar"):
        softmax_attention(q, k, v, query_offset=jnp.array([1, 2]))
    with pytest.raises(ValueError, match="`kv_segment_ids` need the queries' `segment_ids`"):
        softmax_attention(q, k, v, kv_segment_ids=jnp.asarray(KEY_SEGMENTS))
    with pytest.raises(ValueError, match=r"`kv_segment_ids` must be \[B, Tk\] = \(2, 19\)"):
        softmax_attention(q, k, v, segment_ids=jnp.zeros((2, OFFSET_Q), int), kv_segment_ids=jnp.zeros((2, 5), int))
    with pytest.raises(ValueError, match=r"`segment_ids` must be \[B, Tq\] = \(2, 5\)"):
        softmax_attention(q, k, v, segment_ids=jnp.zeros((2, 4), int), kv_segment_ids=jnp.asarray(KEY_SEGMENTS))
    with pytest.raises(TypeError, match="`kv_segment_ids` must be integers"):
        softmax_attention(q, k, v, segment_ids=jnp.zeros((2, OFFSET_Q), int), kv_segment_ids=jnp.zeros((2, OFFSET_K)))
    with pytest.raises(ValueError, match="pass the keys' `kv_segment_ids`"):
        softmax_attention(q, k, v, segment_ids=jnp.zeros((2, OFFSET_Q), int))

"""tensor_attention: the reference against the Khatri-Rao matrix form and packed sequences against
each sequence alone, the streaming xla path against the reference forward and backward (causal,
windowed, non-causal, packed, odd sizes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops.tensor_attention import tensor_attention


def inputs(seed, batch=2, length=19, heads=2, dim=12, value_dim=10):
    keys = jax.random.split(jax.random.key(seed), 5)
    shape = (batch, length, heads, dim)
    q, k1, k2 = (jax.random.normal(key, shape) for key in keys[:3])
    v1, v2 = (jax.random.normal(key, (batch, length, heads, value_dim)) for key in keys[3:])
    return q, k1, k2, v1, v2


def khatri_rao_form(q, k1, k2, v1, v2, scale, mask):
    """``D^-1 exp(scale Q (K1 ⊘ K2)^T) (V1 ⊘ V2)`` per batch and head, in float64 NumPy."""
    q, k1, k2, v1, v2 = (np.asarray(a, np.float64) for a in (q, k1, k2, v1, v2))
    batch, length, heads, _ = q.shape
    out = np.zeros((*q.shape[:3], v1.shape[-1]))
    for b in range(batch):
        for h in range(heads):
            kk = (k1[b, :, h, None, :] * k2[b, None, :, h, :]).reshape(length * length, -1)  # row (j, k)
            vv = (v1[b, :, h, None, :] * v2[b, None, :, h, :]).reshape(length * length, -1)
            logits = scale * q[b, :, h] @ kk.T
            logits = np.where(mask.reshape(length, -1), logits, -np.inf)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[b, :, h] = (weights / weights.sum(axis=1, keepdims=True)) @ vv
    return out


def numpy_mask(length, causal, window):
    i, j, k = np.meshgrid(np.arange(length), np.arange(length), np.arange(length), indexing="ij")
    keep = np.ones((length,) * 3, bool)
    if causal or window is not None:
        keep &= (j <= i) & (k <= i)
    if window is not None:
        keep &= (j > i - window[0]) & (k > i - window[1])
    return keep


MASKS = {"full": dict(causal=False), "causal": dict(causal=True), "window": dict(window=(3, 5))}


def packed_ids(batch, length):
    """``[B, T]`` ids of three segments per row, the boundaries at other places in odd rows."""
    ids = np.zeros((batch, length), np.int32)
    for row in range(batch):
        first, second = [(length // 3, length // 2), (length // 4, 2 * length // 3)][row % 2]
        ids[row, first:] += 1
        ids[row, second:] += 1
    return jnp.asarray(ids)


@pytest.mark.parametrize("causal", [False, True])
def test_packed_sequences_equal_each_sequence_alone(causal):
    args = inputs(3, length=17)
    ids = packed_ids(2, 17)
    got = tensor_attention(*args, segment_ids=ids, causal=causal, impl="reference")
    for row in range(2):
        for segment in range(3):
            (positions,) = np.nonzero(np.asarray(ids[row]) == segment)
            piece = slice(positions[0], positions[-1] + 1)
            want = tensor_attention(*(a[row : row + 1, piece] for a in args), causal=causal, impl="reference")
            np.testing.assert_allclose(got[row : row + 1, piece], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask", MASKS)
def test_reference_is_the_khatri_rao_matrix_form(mask):
    q, k1, k2, v1, v2 = inputs(0, length=17)
    got = tensor_attention(q, k1, k2, v1, v2, impl="reference", **MASKS[mask])
    kwargs = MASKS[mask]
    want = khatri_rao_form(q, k1, k2, v1, v2, 12**-0.5, numpy_mask(17, kwargs.get("causal", False), kwargs.get("window")))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask", [*MASKS, "packed", "packed+causal"])
@pytest.mark.parametrize("length", [19, 70])  # under one query block; several blocks, not multiples
def test_streaming_path_matches_reference_forward_and_backward(mask, length):
    args = inputs(1, length=length, batch=1)
    if mask.startswith("packed"):
        kwargs = dict(segment_ids=packed_ids(1, length), causal=mask.endswith("causal"), scale=0.2)
    else:
        kwargs = dict(MASKS[mask], scale=0.2)
    weights = jax.random.normal(jax.random.key(9), (1, length, 2, 10))
    np.testing.assert_allclose(tensor_attention(*args, impl="xla", **kwargs),
                               tensor_attention(*args, impl="reference", **kwargs), rtol=1e-5, atol=1e-5)

    def loss(impl, *a):
        return jnp.sum(tensor_attention(*a, impl=impl, **kwargs) * weights)

    want = jax.grad(lambda *a: loss("reference", *a), argnums=tuple(range(5)))(*args)
    got = jax.grad(lambda *a: loss("xla", *a), argnums=tuple(range(5)))(*args)
    for g, w in zip(got, want):
        assert float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w))) < 1e-4


def test_errors():
    q, k1, k2, v1, v2 = inputs(2)
    with pytest.raises(ValueError, match="must share a shape"):
        tensor_attention(q, k1[:, :5], k2, v1, v2)
    with pytest.raises(ValueError, match="`window` must be two positive ints"):
        tensor_attention(q, k1, k2, v1, v2, window=(0, 3))
    with pytest.raises(ValueError, match=r"`q` must be \[B, T, H, D\]"):
        tensor_attention(q[0], k1, k2, v1, v2)
    with pytest.raises(ValueError, match=r"`segment_ids` must be \[B, T\]"):
        tensor_attention(q, k1, k2, v1, v2, segment_ids=jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="impl='pallas' does not support segment_ids"):
        tensor_attention(q, k1, k2, v1, v2, segment_ids=jnp.zeros((2, 19), jnp.int32), impl="pallas")


@pytest.mark.parametrize("causal", [False, True])
def test_low_rank_path_converges_to_the_exact_output_with_degree(causal):
    from jaxattn.ops.tensor_attention_poly import feature_rank, monomial_exponents, tensor_attention_poly

    assert monomial_exponents(4, 3).shape == (feature_rank(4, 3), 4) == (35, 4)
    q, k1, k2, v1, v2 = inputs(3, batch=1, length=45, dim=4, value_dim=3)
    q, k1, k2 = (0.9 * jnp.tanh(a) for a in (q, k1, k2))  # bounded entries: |logit| <= 0.9^3 * 4 / 2
    exact = tensor_attention(q, k1, k2, v1, v2, causal=causal, impl="reference")
    errors = [float(jnp.max(jnp.abs(tensor_attention_poly(q, k1, k2, v1, v2, degree=g, causal=causal, chunk_size=16)
                                    - exact))) for g in (1, 2, 3, 4, 8)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:4])), errors  # down to the fp32 floor
    assert errors[-1] < 1e-5, errors


def test_low_rank_khatri_rao_identity_is_exact_for_a_polynomial_kernel():
    """Degree 1 is exactly attention with weights 1 + s (the Taylor polynomial), computed directly."""
    from jaxattn.ops.tensor_attention_poly import tensor_attention_poly

    q, k1, k2, v1, v2 = inputs(4, batch=1, length=9, dim=3, value_dim=2)
    q, k1, k2 = (0.3 * a for a in (q, k1, k2))
    s = 0.5 * jnp.einsum("bihl,bjhl,bkhl->bhijk", q, k1, k2)
    weights = 1 + s
    want = jnp.einsum("bhijk,bjhd,bkhd->bihd", weights, v1, v2) / jnp.sum(weights, axis=(3, 4))[..., None].swapaxes(1, 2)
    got = tensor_attention_poly(q, k1, k2, v1, v2, degree=1, scale=0.5, causal=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

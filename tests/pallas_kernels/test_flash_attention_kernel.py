"""Pallas flash attention: both kernels in the interpreter against the reference (causal or not,
KV-cache alignment, packed segments, sizes that are not multiples of a block), forward and
backward, and lowering for TPU and CUDA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import softmax_attention
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes


def relative_error(got, want):
    return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


CASES = {  # (B, Tq, Tk, H, D, Dv, causal, segments)
    "causal-odd": (2, 70, 70, 3, 12, 10, True, False),
    "bidirectional-packed-blocks": (1, 150, 150, 2, 8, 8, False, True),
    "causal-packed-blocks": (1, 260, 260, 1, 16, 16, True, True),
    "kv-cache": (1, 5, 40, 2, 8, 6, True, False),
    "cross-lengths": (2, 33, 200, 2, 8, 8, False, False),
    "wide-heads": (1, 140, 140, 1, 72, 80, True, False),  # fp32 wider than 64: the Triton kernel's 32-row blocks
}


def make(case, seed=0):
    batch, length_q, length_k, heads, dim, value_dim, causal, segments = case
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, length_q, heads, dim))
    k = jax.random.normal(keys[1], (batch, length_k, heads, dim))
    v = jax.random.normal(keys[2], (batch, length_k, heads, value_dim))
    kwargs = dict(causal=causal, scale=0.3)
    if segments:
        kwargs["segment_ids"] = jnp.cumsum(jax.random.bernoulli(keys[3], 0.03, (batch, length_q)), 1).astype(jnp.int32)
    return q, k, v, kwargs


@pytest.mark.parametrize("name", CASES)
def test_forward_and_gradients_match_reference(kernel, name):
    q, k, v, kwargs = make(CASES[name])
    weights = jax.random.normal(jax.random.key(7), (*q.shape[:3], v.shape[-1]))

    def loss(impl, q, k, v):
        return jnp.sum(softmax_attention(q, k, v, impl=impl, **kwargs) * weights)

    want = softmax_attention(q, k, v, impl="reference", **kwargs)
    got = softmax_attention(q, k, v, impl="pallas", **kwargs)
    assert got.shape == want.shape and got.dtype == v.dtype
    assert relative_error(got, want) < 1e-5
    grads_want = jax.grad(lambda *a: loss("reference", *a), argnums=(0, 1, 2))(q, k, v)
    grads_got = jax.grad(lambda *a: loss("pallas", *a), argnums=(0, 1, 2))(q, k, v)
    for got_, want_ in zip(grads_got, grads_want):
        assert relative_error(got_, want_) < 1e-4


def test_bfloat16_inputs(kernel):
    q, k, v, kwargs = make(CASES["causal-odd"])
    want = softmax_attention(q, k, v, impl="reference", **kwargs)
    got = softmax_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), impl="pallas", **kwargs)
    assert got.dtype == jnp.bfloat16
    # bf16 operands (8 mantissa bits) and a bf16 output; softmax statistics stay fp32.
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=3e-2, atol=3e-2)


def test_kv_lengths_are_refused_and_auto_uses_xla_on_cpu():
    q, k, v, _ = make(CASES["cross-lengths"])
    lengths = jnp.array([20, 150])
    with pytest.raises(ValueError, match="impl='pallas' does not support kv_lengths"):
        softmax_attention(q, k, v, kv_lengths=lengths, impl="pallas")
    np.testing.assert_array_equal(softmax_attention(q, k, v, impl="auto"), softmax_attention(q, k, v, impl="xla"))


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
@pytest.mark.parametrize("segments, block_sizes", [
    (False, None), (True, None),
    (True, (FlashBlockSizes("tpu", block_q=64, block_k=256), FlashBlockSizes("triton", block_q=32, block_k=128,
                                                                             num_warps=8, num_stages=3))),
])
def test_forward_and_backward_lower_for_accelerators(platform, marker, segments, block_sizes, verified_triton_modules):
    q = k = v = jnp.zeros((2, 300, 4, 64))
    segment_ids = jnp.zeros((2, 300), jnp.int32) if segments else None

    def loss(q, k, v):
        return jnp.sum(softmax_attention(q, k, v, segment_ids=segment_ids, impl="pallas", block_sizes=block_sizes))

    lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(lowering_platforms=(platform,))
    assert lowered.as_text().count(marker) == 3  # forward, dQ pass, dK/dV pass

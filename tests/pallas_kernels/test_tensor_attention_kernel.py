"""Pallas tensor (2-simplicial) attention: both kernels in the interpreter against the reference
(bidirectional, causal, windowed; lengths and head sizes that are not multiples of a block), forward
and the gradients of all five inputs, and lowering for TPU and CUDA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import tensor_attention
from pallas_kernels.tensor_attention.block_sizes import TensorBlockSizes


def relative_error(got, want):
    return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


CASES = {  # (B, T, H, D, Dv, mask)
    "bidirectional-tiny": (2, 5, 1, 12, 10, dict(causal=False)),
    "causal-odd": (1, 19, 2, 12, 10, dict(causal=True)),
    "window-odd": (1, 37, 2, 12, 10, dict(window=(3, 5))),
    "window-blocks": (1, 150, 1, 8, 8, dict(window=(20, 45))),  # skips k1 and k2 blocks on both kernels
}


def make(case, seed=0):
    batch, length, heads, dim, value_dim, mask = case
    keys = jax.random.split(jax.random.key(seed), 5)
    qk = [jax.random.normal(key, (batch, length, heads, dim)) for key in keys[:3]]
    v = [jax.random.normal(key, (batch, length, heads, value_dim)) for key in keys[3:]]
    return (*qk, *v), dict(scale=0.3, **mask)


@pytest.mark.parametrize("name", CASES)
def test_forward_and_gradients_match_reference(kernel, name):
    args, kwargs = make(CASES[name])
    weights = jax.random.normal(jax.random.key(7), args[3].shape)

    def loss(impl, *a):
        return jnp.sum(tensor_attention(*a, impl=impl, **kwargs) * weights)

    want = tensor_attention(*args, impl="reference", **kwargs)
    got = tensor_attention(*args, impl="pallas", **kwargs)
    assert got.shape == want.shape and got.dtype == args[3].dtype
    assert relative_error(got, want) < 1e-5
    grads_want = jax.grad(lambda *a: loss("reference", *a), argnums=range(5))(*args)
    grads_got = jax.grad(lambda *a: loss("pallas", *a), argnums=range(5))(*args)
    for got_, want_ in zip(grads_got, grads_want):
        assert relative_error(got_, want_) < 1e-5


def test_bfloat16_inputs(kernel):
    args, kwargs = make(CASES["causal-odd"])
    want = tensor_attention(*args, impl="reference", **kwargs)
    got = tensor_attention(*(a.astype(jnp.bfloat16) for a in args), impl="pallas", **kwargs)
    assert got.dtype == jnp.bfloat16
    # bf16 operands and pair products (8 mantissa bits) and a bf16 output; softmax statistics stay fp32.
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=5e-2, atol=5e-2)


def test_auto_uses_xla_on_cpu():
    args, kwargs = make(CASES["causal-odd"])
    np.testing.assert_array_equal(tensor_attention(*args, impl="auto", **kwargs),
                                  tensor_attention(*args, impl="xla", **kwargs))


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
@pytest.mark.parametrize("mask", [
    dict(causal=False), dict(causal=True), dict(window=(64, 200)),
    dict(causal=True, block_sizes=(TensorBlockSizes("tpu", block_q=16, block_k1=8, block_k2=256),
                                   TensorBlockSizes("triton", block_q=8, block_k1=8, block_k2=64, num_warps=4))),
])
def test_forward_and_backward_lower_for_accelerators(platform, marker, mask, verified_triton_modules):
    args = [jnp.zeros((2, 300, 2, 64))] * 5

    def forward(*a):
        return tensor_attention(*a, impl="pallas", **mask)

    def loss(*a):
        return jnp.sum(forward(*a))

    lower = lambda f: jax.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()  # noqa: E731
    assert lower(forward).count(marker) == 1
    assert lower(jax.value_and_grad(loss, argnums=range(5))).count(marker) == 4  # forward, dq, dk1/dv1, dk2/dv2

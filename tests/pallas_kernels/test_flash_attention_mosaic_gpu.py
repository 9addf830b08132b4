"""Mosaic GPU (Hopper) flash attention forward: in the Mosaic GPU interpreter on CPU against the
reference (causal or not, lengths that need padding), gradients through the op (the backward is
Triton's), lowering for CUDA, and the choice between Mosaic GPU and Triton kernels.

The GPU tier runs the compiled kernel on a Hopper GPU:

    JAX_PLATFORMS=cuda,cpu python -m pytest -m gpu tests/pallas_kernels/test_flash_attention_mosaic_gpu.py
"""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import softmax_attention
from pallas_kernels import platform
from pallas_kernels.flash_attention import mosaic_gpu
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes

# bf16 operands (8 mantissa bits) and bf16 probabilities in the P V product; statistics stay fp32.
BF16_TOLERANCE = dict(rtol=3e-2, atol=3e-2)


def make(batch, length_q, length_k, heads, dim, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    shape = lambda length: (batch, length, heads, dim)  # noqa: E731
    return tuple(jax.random.normal(key, shape(length), jnp.bfloat16)
                 for key, length in zip(keys, (length_q, length_k, length_k)))


def as_float(a):
    return np.asarray(a, np.float32)


@pytest.mark.parametrize("length_q, length_k, causal", [(128, 128, True), (70, 200, False), (100, 100, True)])
def test_interpreted_forward_matches_reference(length_q, length_k, causal):
    q, k, v = make(1, length_q, length_k, 2, 64)
    kwargs = dict(causal=causal, scale=0.125)
    want = softmax_attention(q, k, v, impl="reference", **kwargs)
    got = softmax_attention(q, k, v, impl="pallas", interpret="mosaic_gpu", **kwargs)
    assert got.shape == want.shape and got.dtype == jnp.bfloat16
    np.testing.assert_allclose(as_float(got), as_float(want), **BF16_TOLERANCE)


def test_interpreted_forward_with_pipelined_key_blocks_and_gradients():
    """Three 64-key blocks through three shared-memory stages, 128-query blocks; gradients through
    the op (Triton's backward on the Mosaic GPU forward's output and log-sum-exp)."""
    q, k, v = make(1, 96, 160, 1, 64, seed=1)
    kwargs = dict(causal=True, scale=0.125)
    sizes = FlashBlockSizes("mosaic_gpu", block_q=128, block_k=64, num_stages=3)
    weights = jax.random.normal(jax.random.key(7), q.shape)

    def loss(impl, q, k, v, **options):
        out = softmax_attention(q, k, v, impl=impl, **kwargs, **options)
        return jnp.sum(out.astype(jnp.float32) * weights)

    want = jax.grad(lambda *a: loss("reference", *a), argnums=(0, 1, 2))(q, k, v)
    got = jax.grad(lambda *a: loss("pallas", *a, interpret="mosaic_gpu", block_sizes=sizes), argnums=(0, 1, 2))(q, k, v)
    for got_, want_ in zip(got, want):
        scale = float(jnp.max(jnp.abs(want_.astype(jnp.float32))))
        np.testing.assert_allclose(as_float(got_) / scale, as_float(want_) / scale, rtol=0, atol=3e-2)


def test_segment_ids_are_refused_on_the_mosaic_gpu_path():
    q, k, v = make(1, 64, 64, 1, 64)
    segment_ids = jnp.zeros((1, 64), jnp.int32)
    with pytest.raises(ValueError, match="no Mosaic GPU kernel"):
        softmax_attention(q, k, v, segment_ids=segment_ids, impl="pallas", interpret="mosaic_gpu")


def lowered_kernels(monkeypatch, family, *, causal, dim=64, dtype=jnp.bfloat16, segments=False, num_keys=300):
    """The kernel custom calls (``mosaic_gpu...`` or Triton's) of the op's value and gradient lowered for CUDA."""
    monkeypatch.setenv(platform.GPU_KERNELS_ENV, family)
    q, k = jnp.zeros((2, 300, 4, dim), dtype), jnp.zeros((2, num_keys, 4, dim), dtype)
    v = k
    segment_ids = jnp.zeros((2, 300), jnp.int32) if segments else None

    def loss(q, k, v):
        out = softmax_attention(q, k, v, causal=causal, segment_ids=segment_ids, impl="pallas")
        return jnp.sum(out.astype(jnp.float32))

    traced = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v)
    text = traced.lower(lowering_platforms=("cuda",)).as_text()
    targets = re.findall(r"custom_call @([\w$.]+)\(", text)
    return sorted("mosaic_gpu" if target.startswith("mosaic_gpu") else target
                  for target in targets if "mosaic_gpu" in target or "triton" in target)


@pytest.mark.parametrize("causal", [True, False])
def test_mosaic_gpu_forward_lowers_for_cuda_with_triton_backward(monkeypatch, causal):
    triton = "__gpu$xla.gpu.triton"
    # The forward on Mosaic GPU, the dQ and dK/dV passes on Triton; all three on Triton when told.
    assert lowered_kernels(monkeypatch, "mosaic", causal=causal) == [triton, triton, "mosaic_gpu"]
    assert lowered_kernels(monkeypatch, "triton", causal=causal) == [triton] * 3


@pytest.mark.parametrize("operands", [dict(dim=48), dict(dtype=jnp.float32), dict(segments=True), dict(dim=512),
                                      dict(num_keys=200)])
def test_operands_the_kernel_does_not_take_lower_to_triton(monkeypatch, operands, caplog):
    """Heads not a multiple of 64, fp32, segment ids, heads too wide for shared memory, and causal
    attention with more queries than keys (its first rows see no key)."""
    mosaic_gpu._log_fallback.cache_clear()  # logged once per reason and process
    with caplog.at_level(logging.INFO, logger="pallas_kernels.flash_attention.mosaic_gpu"):
        kernels = lowered_kernels(monkeypatch, "mosaic", causal=True, **operands)
    assert kernels == ["__gpu$xla.gpu.triton"] * 3
    assert "flash attention forward on CUDA: Triton kernel, since" in caplog.text


@pytest.mark.parametrize("capability, family", [(9.0, "mosaic"), (10.0, "mosaic"), (8.9, "triton"), (8.0, "triton")])
def test_gpu_kernels_by_compute_capability(monkeypatch, capability, family):
    monkeypatch.delenv(platform.GPU_KERNELS_ENV, raising=False)
    assert platform.gpu_kernels(capability) == family


def test_gpu_kernels_environment_switch(monkeypatch):
    monkeypatch.setenv(platform.GPU_KERNELS_ENV, "triton")
    assert platform.gpu_kernels(9.0) == "triton"
    monkeypatch.setenv(platform.GPU_KERNELS_ENV, "Mosaic")
    assert platform.gpu_kernels(8.0) == "mosaic"
    monkeypatch.setenv(platform.GPU_KERNELS_ENV, "cutlass")
    with pytest.raises(ValueError, match="JAXATTN_GPU_KERNELS='cutlass': expected one of mosaic, triton"):
        platform.gpu_kernels()


def test_mosaic_gpu_block_sizes_are_validated():
    assert FlashBlockSizes.resolve(None, "mosaic_gpu") == FlashBlockSizes("mosaic_gpu", block_q=64, block_k=64,
                                                                          num_stages=2)
    with pytest.raises(ValueError, match="`block_k` must be a multiple of 64 for the Mosaic GPU kernel"):
        FlashBlockSizes("mosaic_gpu", block_k=32)
    with pytest.raises(ValueError, match="`num_stages` must be >= 2"):
        FlashBlockSizes("mosaic_gpu", num_stages=1)
    with pytest.raises(ValueError, match="`num_warps` is not a setting of the Mosaic GPU kernel"):
        FlashBlockSizes("mosaic_gpu", num_warps=4)


def _hopper_gpu() -> bool:
    return (platform.device_compute_capability() or 0) >= platform.MOSAIC_GPU_MIN_CAPABILITY


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper_gpu(), reason="needs a Hopper (sm_90+) GPU visible to JAX")
@pytest.mark.parametrize("causal", [True, False])
def test_compiled_forward_and_gradients_match_reference_on_hopper(monkeypatch, causal):
    monkeypatch.setenv(platform.GPU_KERNELS_ENV, "mosaic")
    q, k, v = make(2, 1000, 1000, 4, 128)
    kwargs = dict(causal=causal, scale=128 ** -0.5)
    want = softmax_attention(q, k, v, impl="reference", **kwargs)
    got = jax.jit(lambda q, k, v: softmax_attention(q, k, v, impl="pallas", **kwargs))(q, k, v)
    np.testing.assert_allclose(as_float(got), as_float(want), **BF16_TOLERANCE)
    grads = [jax.grad(lambda q, impl=impl: jnp.sum(softmax_attention(q, k, v, impl=impl, **kwargs)
                                                   .astype(jnp.float32)))(q) for impl in ("reference", "pallas")]
    scale = float(jnp.max(jnp.abs(grads[0].astype(jnp.float32))))
    np.testing.assert_allclose(as_float(grads[1]) / scale, as_float(grads[0]) / scale, rtol=0, atol=3e-2)

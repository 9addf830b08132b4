"""Pallas chunked linear attention: both kernels in the interpreter against the reference, forward
and backward, and lowering for TPU and CUDA."""

import jax
import jax.numpy as jnp
import pytest

from jaxattn.ops import linear_attention
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.platform import INTERPRET_ENV

from tests.ops.test_linear_attention import CASES as ALL_CASES
from tests.ops.test_linear_attention import build, check_gradients_match_reference, relative_error, tolerance

# Every causal case without segments (the kernels do not take segment_ids), and non-causal.
CASES = ["plain", "normalized", "g_gamma", "gated", "gated+decay", "initial_state", "gated+initial_state",
         "noncausal", "noncausal+normalized"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("length", [70, 5, 32])
def test_forward_matches_reference(kernel, name, length):
    q, k, v, kwargs = build(ALL_CASES[name], length=length)
    want, want_state = linear_attention(q, k, v, output_final_state=True, impl="reference", **kwargs)
    got, got_state = linear_attention(q, k, v, output_final_state=True, impl="pallas", chunk_size=16, **kwargs)
    assert got.shape == v.shape and got.dtype == v.dtype
    assert relative_error(got, want) < tolerance(kwargs)
    assert relative_error(got_state, want_state) < tolerance(kwargs)


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_reference(kernel, name):
    check_gradients_match_reference(name, "pallas", chunk_size=16)


def test_bfloat16_inputs(kernel):
    q, k, v, kwargs = build(ALL_CASES["gated"], length=40)
    want = linear_attention(q, k, v, impl="reference", **kwargs)
    got = linear_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), impl="pallas", chunk_size=16, **kwargs)
    assert got.dtype == jnp.bfloat16
    # bf16 operands keep 8 mantissa bits; products accumulate in fp32 (as the xla path's bf16 test).
    assert relative_error(got, want) < 3e-2


def test_segment_ids_are_refused_and_auto_uses_xla_on_cpu():
    q, k, v, kwargs = build(ALL_CASES["packed"], length=20)
    with pytest.raises(ValueError, match="impl='pallas' does not support segment_ids"):
        linear_attention(q, k, v, impl="pallas", chunk_size=16, **kwargs)
    auto = linear_attention(q, k, v, impl="auto", **kwargs)
    assert relative_error(auto, linear_attention(q, k, v, impl="xla", **kwargs)) == 0.0


def test_chunk_size_errors_name_the_kernel(monkeypatch):
    q, k, v, _ = build(ALL_CASES["plain"], length=20)
    monkeypatch.setenv(INTERPRET_ENV, "gpu")
    with pytest.raises(ValueError, match="Triton kernel: chunk_size must be a power of two"):
        linear_attention(q, k, v, impl="pallas", chunk_size=24)
    monkeypatch.setenv(INTERPRET_ENV, "tpu")
    with pytest.raises(ValueError, match="TPU kernel: chunk_size must be a multiple of 8"):
        linear_attention(q, k, v, impl="pallas", chunk_size=12)


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
@pytest.mark.parametrize("name, block_sizes", [
    ("plain", None), ("gated+initial_state", None),
    ("gated+initial_state", ChunkedBlockSizes("triton", num_warps=8, num_stages=3)),
])
def test_forward_and_backward_lower_for_accelerators(platform, marker, name, block_sizes, verified_triton_modules):
    """One forward and two backward sweeps per call; each lowers to a kernel of that platform."""
    q, k, v, kwargs = build(ALL_CASES[name], length=100)
    q, k, v = (jnp.broadcast_to(a, (2, 100, 3, 64)) for a in (q[..., :1], k[..., :1], v[..., :1]))
    if "initial_state" in kwargs:
        kwargs["initial_state"] = jnp.zeros((2, 3, 64, 64))

    def loss(q, k, v):
        return jnp.sum(linear_attention(q, k, v, impl="pallas", chunk_size=64, block_sizes=block_sizes, **kwargs))

    text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == 3

"""Pallas chunked linear attention: both kernels in the interpreter against the reference, forward
and backward, and lowering for TPU and CUDA."""

import re

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


# Per kernel: value columns V (not a multiple of the block: padded) and the blocks that split them.
VALUE_SPLITS = {"gpu": (40, ChunkedBlockSizes("triton", block_v=16)), "tpu": (150, ChunkedBlockSizes("tpu", block_v=128))}


@pytest.mark.parametrize("name, gradients", [("gated+initial_state", True), ("normalized", False)])
def test_value_split_matches_reference(kernel, name, gradients):
    """The forward sweep split into value blocks (2 or 3 of them, the last one partly padding; with
    normalize the ones column lands in the last), T = 37 over chunks of 16: outputs and final state
    against the reference, and every gradient where they go through the split forward's residuals
    (the final state feeds the gate's gradient; the backward sweeps themselves run whole heads)."""
    value_dim, block_sizes = VALUE_SPLITS[kernel]
    q, k, _, kwargs = build(ALL_CASES[name], length=37, batch=1)
    q, k, g = q[:, :, :1], k[:, :, :1], kwargs.pop("g", None)  # one head: the interpreter runs programs in turn
    if g is not None:
        kwargs["g"] = g[:, :, :1]
    v = jax.random.normal(jax.random.key(4), (*q.shape[:3], value_dim))
    if "initial_state" in kwargs:
        state_shape = (*q.shape[:1], q.shape[2], q.shape[3], value_dim + kwargs["normalize"])
        kwargs["initial_state"] = jax.random.normal(jax.random.key(5), state_shape)
    differentiable = {"q": q, "k": k, "v": v, **{key: kwargs.pop(key) for key in ("g", "initial_state") if key in kwargs}}
    weights = jax.random.normal(jax.random.key(6), v.shape)

    def run(inputs, impl, **options):
        inputs = dict(inputs)
        return linear_attention(inputs.pop("q"), inputs.pop("k"), inputs.pop("v"), output_final_state=True, impl=impl,
                                **inputs, **kwargs, **options)

    def loss(inputs, impl, **options):
        o, state = run(inputs, impl, **options)
        return jnp.sum(o * weights) + 0.1 * jnp.sum(state**2)

    options = dict(chunk_size=16, block_sizes=block_sizes)
    bound = tolerance({**kwargs, **differentiable})
    for got, want in zip(run(differentiable, "pallas", **options), run(differentiable, "reference")):
        assert relative_error(got, want) < bound
    if not gradients:
        return
    want = jax.grad(loss)(differentiable, "reference")
    got = jax.grad(loss)(differentiable, "pallas", **options)
    for key in want:
        assert relative_error(got[key], want[key]) < bound, key


@pytest.mark.parametrize("platform, marker", [("cuda", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
def test_value_split_lowers_with_a_program_per_value_block(platform, marker, verified_triton_modules):
    """V = 256 in blocks of 64 (Triton) or 128 (TPU): the forward's grid gains a value axis (the
    backward sweeps keep whole heads). CUDA: the grid is in the lowered custom call; TPU: in the
    kernel's jaxpr (the lowered Mosaic module is serialized)."""
    q = jax.random.normal(jax.random.key(0), (2, 100, 3, 64))
    v = jax.random.normal(jax.random.key(1), (2, 100, 3, 256))
    block_sizes = (ChunkedBlockSizes("triton", block_v=64), ChunkedBlockSizes("tpu", block_v=128))

    def loss(q, v):
        return jnp.sum(linear_attention(q, q, v, impl="pallas", chunk_size=64, block_sizes=block_sizes))

    forward_and_backward = jax.value_and_grad(loss, argnums=(0, 1))
    text = jax.jit(forward_and_backward).trace(q, v).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == 3
    if platform == "cuda":
        assert text.count("grid_x = 2 : i32, grid_y = 3 : i32, grid_z = 4 : i32") == 1  # the forward
        assert text.count("grid_x = 2 : i32, grid_y = 3 : i32, grid_z = 1 : i32") == 2  # dQ and dK, dV
    else:  # the TPU kernels' grids are the 4-axis ones (B, H, value blocks, chunks); T = 100: 2 chunks of 64
        grids = re.findall(r"grid=\((\d+, \d+, \d+, \d+)\)", str(jax.make_jaxpr(forward_and_backward)(q, v)))
        assert sorted(grids) == ["2, 3, 1, 2", "2, 3, 1, 2", "2, 3, 2, 2"]


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

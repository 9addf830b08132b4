"""GPU tier: the compiled Triton-backend kernels (not the interpreter) against the reference,
forward and backward. Runs only where JAX sees a GPU:

    JAX_PLATFORMS=cuda,cpu python -m pytest -m gpu tests/pallas_kernels
"""

import jax
import jax.numpy as jnp
import pytest

from jaxattn.ops import delta_rule, diagonal_scan, linear_attention, softmax_attention, tensor_attention


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _has_gpu(), reason="needs a GPU visible to JAX")]


def relative_error(got, want):
    return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


def _inputs(shape, count, seed=0):
    return [jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(seed), count)]


def _unit(k):
    return k / jnp.linalg.norm(k, axis=-1, keepdims=True)


def _segments(batch, length):
    """Packed sequences: segment ids rising at random points."""
    starts = jax.random.bernoulli(jax.random.key(5), 0.01, (batch, length))
    return jnp.cumsum(starts, axis=1).astype(jnp.int32)


CASES = {
    "linear_attention": (lambda impl, q, k, v: linear_attention(q, k, v, impl=impl), lambda: _inputs((2, 1000, 4, 64), 3)),
    "linear_attention_gated": (
        lambda impl, q, k, v, g: linear_attention(q, k, v, g=-jax.nn.softplus(g), impl=impl),
        lambda: _inputs((2, 1000, 4, 64), 3) + _inputs((2, 1000, 4), 1, seed=1),
    ),
    "delta_rule": (
        lambda impl, q, k, v, b: delta_rule(q, _unit(k), v, 2 * jax.nn.sigmoid(b[..., 0]), impl=impl),
        lambda: _inputs((2, 1000, 4, 64), 4),
    ),
    "delta_product_gated": (
        lambda impl, q, k, v, b: delta_rule(q[:, ::2], _unit(k), v, 2 * jax.nn.sigmoid(b[..., 0]),
                                            g=-jax.nn.softplus(b[:, ::2, :, 1]), householder_steps=2, impl=impl),
        lambda: _inputs((2, 1000, 4, 64), 4),
    ),
    "diagonal_scan_complex": (
        lambda impl, a, b: diagonal_scan(0.9 * jnp.tanh(a) * jnp.exp(1j * b), b + 0j, impl=impl)[0],
        lambda: _inputs((2, 3000, 300), 2),
    ),
    "flash_attention_causal": (lambda impl, q, k, v: softmax_attention(q, k, v, impl=impl), lambda: _inputs((2, 1000, 4, 64), 3)),
    "flash_attention_packed_d128": (
        lambda impl, q, k, v: softmax_attention(q, k, v, causal=False, segment_ids=_segments(2, 700), impl=impl),
        lambda: _inputs((2, 700, 2, 128), 3),
    ),
    # The reference forms [B, H, T, T, T] logits: short sequences.
    "tensor_attention_causal": (
        lambda impl, *a: tensor_attention(*a, causal=True, impl=impl), lambda: _inputs((2, 200, 2, 64), 5)
    ),
    "tensor_attention_bidirectional": (
        lambda impl, *a: tensor_attention(*a, causal=False, impl=impl), lambda: _inputs((1, 150, 2, 32), 5)
    ),
    "tensor_attention_window_odd": (
        lambda impl, *a: tensor_attention(*a, window=(40, 100), impl=impl), lambda: _inputs((1, 300, 2, 48), 5)
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_compiled_kernel_matches_reference(name):
    fn, make = CASES[name]
    args = make()
    weights = jnp.cos(jnp.arange(fn("reference", *args).size).reshape(fn("reference", *args).shape))
    assert relative_error(fn("pallas", *args), fn("reference", *args)) < 1e-4

    def loss(impl, *a):
        return jnp.sum(jnp.real(fn(impl, *a)) * weights)

    argnums = tuple(range(len(args)))
    for got, want in zip(jax.grad(lambda *a: loss("pallas", *a), argnums)(*args),
                         jax.grad(lambda *a: loss("reference", *a), argnums)(*args)):
        assert relative_error(got, want) < 1e-3


@pytest.mark.parametrize("name", [name for name in CASES if "complex" not in name])
def test_compiled_kernel_bfloat16_forward(name):
    """bf16 operands (8 mantissa bits), fp32 accumulation: within 3e-2 of the fp32 reference, as in
    the interpreter tests. Gates stay fp32."""
    fn, make = CASES[name]
    args = make()
    got = fn("pallas", *(a.astype(jnp.bfloat16) if i < 3 or "gated" not in name else a for i, a in enumerate(args)))
    assert got.dtype == jnp.bfloat16
    assert relative_error(got.astype(jnp.float32), fn("reference", *args)) < 3e-2

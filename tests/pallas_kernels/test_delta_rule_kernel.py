"""Pallas delta rule: both kernels in the interpreter against the reference, forward and every
gradient over odd sizes, the chunk system's inverse on its hardest inputs, bf16, and lowering for
TPU and CUDA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import relative_error

from jaxattn.ops import delta_rule
from pallas_kernels.delta_rule.chunk_math import system_inverse
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.platform import INTERPRET_ENV

from tests.ops.test_delta_rule import check_matches_reference, make_inputs, near_reflections

# (householder steps, T, options): "full" is gates, an initial state and beta in [0, 2]; "plain"
# none of them and beta in [0, 1]. Chunks of 16 steps: T * n steps end on and off chunk edges.
CASES = [(1, 5, "full"), (1, 63, "plain"), (1, 65, "full"), (1, 130, "plain"),
         (2, 5, "plain"), (2, 63, "full"), (2, 65, "plain"), (2, 130, "full")]


@pytest.mark.parametrize("steps, length, options", CASES)
def test_matches_reference_forward_and_gradients(kernel, steps, length, options):
    full = options == "full"
    check_matches_reference("pallas", steps, length, 16, gated=full, segments=False, initial_state=full,
                            beta_max=2.0 if full else 1.0)


def _hard_systems(batch, size, seed=0):
    """``L = tril(diag(beta) K K^T, -1)`` with unit keys close to one another and beta in [1.9, 2]:
    the inverse's entries grow fastest (near-reflections of almost the same vector)."""
    keys = jax.random.split(jax.random.key(seed), 3)
    k = jax.random.normal(keys[0], (1, 16)) + 0.01 * jax.random.normal(keys[1], (batch, size, 16))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    beta = jax.random.uniform(keys[2], (batch, size, 1), minval=1.9, maxval=2.0)
    return jnp.tril(beta * (k @ jnp.swapaxes(k, -1, -2)), -1)


@pytest.mark.parametrize("size", [16, 24, 64])
def test_system_inverse_is_accurate_with_beta_near_two(size):
    """Masked blockwise doubling against a float64 solve: about 4e-6 at C = 64 (a triangular solve
    gets 1e-6 in fp32); C = 24 is a TPU chunk that is not a power of two."""
    lower = _hard_systems(4, size)
    rhs = jax.random.normal(jax.random.key(1), (4, size, 32))
    got = jax.vmap(system_inverse)(lower) @ rhs
    m = np.eye(size) + np.asarray(lower, np.float64)
    exact = np.linalg.solve(m, np.asarray(rhs, np.float64))
    assert np.all(np.isfinite(got))
    assert relative_error(got, exact) < 2e-5


def test_system_inverse_of_a_padded_chunk():
    """A chunk whose last rows are padding (zero keys, so zero rows and columns in L): the padding's
    block of the inverse is the identity and the real rows' block is the inverse of their system."""
    real = 37
    lower = _hard_systems(2, 64, seed=2)
    mask = (jnp.arange(64) < real)
    lower = lower * mask[:, None] * mask[None, :]
    got = jax.vmap(system_inverse)(lower)
    exact = np.linalg.inv(np.eye(real) + np.asarray(lower[:, :real, :real], np.float64))
    assert relative_error(got[:, :real, :real], exact) < 2e-5
    np.testing.assert_array_equal(got[:, real:, real:], jnp.broadcast_to(jnp.eye(64 - real), (2, 64 - real, 64 - real)))
    np.testing.assert_array_equal(got[:, real:, :real], 0.0)


def test_long_sequence_with_beta_near_two(kernel):
    """Near-reflections over many chunks and a padded last chunk: the kernels follow the reference."""
    q, k, v, beta = near_reflections(1000)
    o, state = delta_rule(q, k, v, beta, output_final_state=True, impl="pallas", chunk_size=64)
    want, want_state = delta_rule(q, k, v, beta, output_final_state=True, impl="reference")
    assert relative_error(o, want) < 1e-4
    assert relative_error(state, want_state) < 1e-4


def test_bfloat16_inputs(kernel):
    (q, k, v, beta), kwargs = make_inputs(5, length=40, steps=2, segments=False)
    low = [a.astype(jnp.bfloat16) for a in (q, k, v)]
    o, state = delta_rule(*low, beta, output_final_state=True, impl="pallas", chunk_size=16, **kwargs)
    want, want_state = delta_rule(*[a.astype(jnp.float32) for a in low], beta, output_final_state=True,
                                  impl="reference", **kwargs)
    assert o.dtype == jnp.bfloat16 and state.dtype == jnp.float32
    # bf16 operands keep 8 mantissa bits; products accumulate in fp32 and the state stays fp32.
    assert relative_error(o, want) < 2e-2
    assert relative_error(state, want_state) < 1e-2


def test_segment_ids_are_refused_and_auto_uses_xla_on_cpu():
    args, kwargs = make_inputs(8, length=20)
    with pytest.raises(ValueError, match="impl='pallas' does not support segment_ids"):
        delta_rule(*args, impl="pallas", chunk_size=16, **kwargs)
    auto = delta_rule(*args, impl="auto", **kwargs)
    assert relative_error(auto, delta_rule(*args, impl="xla", **kwargs)) == 0.0


def test_chunk_size_errors_name_the_kernel(monkeypatch):
    args, _ = make_inputs(9, length=20, gated=False, segments=False, initial_state=False)
    monkeypatch.setenv(INTERPRET_ENV, "gpu")
    with pytest.raises(ValueError, match="delta rule Triton kernel: chunk_size must be a power of two"):
        delta_rule(*args, impl="pallas", chunk_size=24)
    monkeypatch.setenv(INTERPRET_ENV, "tpu")
    with pytest.raises(ValueError, match="delta rule TPU kernel: chunk_size must be a multiple of 8"):
        delta_rule(*args, impl="pallas", chunk_size=12)


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
@pytest.mark.parametrize("steps, gated, block_sizes", [
    (1, False, None), (2, True, None), (1, True, ChunkedBlockSizes("triton", num_warps=2, num_stages=3)),
])
def test_forward_and_backward_lower_for_accelerators(platform, marker, steps, gated, block_sizes,
                                                     verified_triton_modules):
    """Six kernels: the forward's chunk terms and sweep; the backward's chunk terms, forward and
    reverse sweeps and gradients."""
    batch, length, heads, dim = 2, 100, 3, 64
    q = jnp.ones((batch, length, heads, dim))
    k, v = jnp.ones((batch, length * steps, heads, dim)), jnp.ones((batch, length * steps, heads, dim))
    beta = jnp.ones((batch, length * steps, heads))
    g = jnp.zeros((batch, length, heads)) if gated else None

    def loss(q, k, v, beta, g):
        return jnp.sum(delta_rule(q, k, v, beta, g=g, householder_steps=steps, initial_state=jnp.zeros((batch, heads, dim, dim)),
                                  impl="pallas", block_sizes=block_sizes))

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4) if gated else (0, 1, 2, 3))
    text = jax.jit(grad).trace(q, k, v, beta, g).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == 6

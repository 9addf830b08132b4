"""SSM convolution kernels against the impulse response of the discrete recurrence (float64), S4's
two generating-function paths against each other, and the FFT convolution against a direct sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn.hippo import hippo_legs_dplr
from jaxattn.ops import (
    fft_convolution, padded_fft_convolution, s4_c_from_c_tilde, s4_c_tilde, s4_discrete_system, s4_kernel,
    s4d_kernel,
)


def complex_normal(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def impulse_response(a_bar, b_bar, c, length):
    """``K[l] = Re(c Abar^l Bbar)`` by running the recurrence on a unit impulse (NumPy, one feature)."""
    state, kernel = b_bar, []
    for _ in range(length):
        kernel.append((c @ state).real)
        state = a_bar @ state
    return np.array(kernel)


def test_s4d_kernel_is_the_zoh_recurrence():
    rng = np.random.default_rng(0)
    heads, modes, length = 3, 5, 37
    lam = -rng.uniform(0.1, 1.0, (heads, modes)) + 1j * rng.uniform(-5, 5, (heads, modes))
    b, c = complex_normal(rng, heads, modes), complex_normal(rng, heads, modes)
    step = rng.uniform(1e-2, 1e-1, heads)
    with jax.enable_x64(True):
        got = np.asarray(s4d_kernel(*map(jnp.asarray, (lam, b, c, step)), length))
    for h in range(heads):
        a_bar = np.exp(step[h] * lam[h])
        b_bar = (a_bar - 1) / lam[h] * b[h]
        # Each stored mode stands for a conjugate pair: twice the real part of its response.
        want = impulse_response(np.diag(a_bar), b_bar, 2 * c[h], length)
        np.testing.assert_allclose(got[h], want, rtol=1e-10, atol=1e-12)


def dplr_system(rng, heads, modes, hippo):
    if hippo:
        lam, p, b, _ = hippo_legs_dplr(2 * modes)
        lam, p, b = (np.broadcast_to(x, (heads, modes)) for x in (lam, p, b))
        q = p
    else:
        lam = -rng.uniform(0.1, 1.0, (heads, modes)) + 1j * rng.uniform(-5, 5, (heads, modes))
        p, q, b = (0.3 * complex_normal(rng, heads, modes) for _ in range(3))
    return lam, p, q, b, complex_normal(rng, heads, modes), rng.uniform(1e-2, 1e-1, heads)


@pytest.mark.parametrize("hippo", [True, False], ids=["hippo", "random"])
@pytest.mark.parametrize("system_impl", ["xla", "reference"])
def test_s4_kernel_is_the_powered_bilinear_dplr_matrix(hippo, system_impl):
    """With ``C~ = C (I - Abar^L)`` (by either implementation of the system and of ``C~``), both
    generating-function paths give ``K[l] = C Abar^l Bbar`` of the full (stored and conjugate)
    system, powered directly."""
    rng = np.random.default_rng(1)
    heads, modes, length = 2, 8, 33
    lam, p, q, b, c, step = dplr_system(rng, heads, modes, hippo)
    with jax.enable_x64(True):
        args = [jnp.asarray(x) for x in (lam, p, q, b)]
        c_tilde = s4_c_tilde(*args, jnp.asarray(c), jnp.asarray(step), length, impl=system_impl)
        got = {impl: np.asarray(s4_kernel(*args, c_tilde, jnp.asarray(step), length, impl=impl))
               for impl in ("xla", "reference")}
        for h in range(heads):
            full = lambda x: np.concatenate([x[h], x[h].conj()])  # noqa: E731
            a = np.diag(full(lam)) - np.outer(full(p), full(q).conj())
            backward = np.linalg.inv(np.eye(2 * modes) - step[h] / 2 * a)
            a_bar, b_bar = backward @ (np.eye(2 * modes) + step[h] / 2 * a), backward @ (step[h] * full(b))
            got_a_bar, got_b_bar = s4_discrete_system(*(x[h] for x in args), step[h], impl=system_impl)
            np.testing.assert_allclose(got_a_bar, a_bar, atol=1e-12)
            np.testing.assert_allclose(got_b_bar, b_bar, atol=1e-12)
            want = impulse_response(a_bar, b_bar, full(c), length)
            for impl, kernel in got.items():
                np.testing.assert_allclose(kernel[h], want, rtol=1e-8, atol=1e-10, err_msg=impl)


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_s4_c_from_c_tilde_inverts_s4_c_tilde(impl):
    """``C~ -> C`` undoes ``C -> C~`` (float64), and the read-out over the full state is the stored
    modes' ``C`` followed by its conjugates."""
    rng = np.random.default_rng(2)
    heads, modes, length = 2, 8, 33
    lam, p, q, b, c, step = dplr_system(rng, heads, modes, hippo=False)
    with jax.enable_x64(True):
        args = [jnp.asarray(x) for x in (lam, p, q, b, step)]
        c_tilde = s4_c_tilde(*args[:4], jnp.asarray(c), args[4], length, impl=impl)
        a_bar, _ = jax.vmap(s4_discrete_system)(*args)
        got = np.asarray(s4_c_from_c_tilde(a_bar, c_tilde, length, impl=impl))
    np.testing.assert_allclose(got, np.concatenate([c, c.conj()], axis=-1), rtol=1e-9, atol=1e-10)


def test_fft_convolution_is_the_direct_sum():
    rng = np.random.default_rng(2)
    batch, length, heads = 2, 19, 3
    u = rng.standard_normal((batch, length, heads))
    k, k_rev = rng.standard_normal((heads, length)), rng.standard_normal((heads, length))
    want_causal = np.zeros_like(u)
    want_reverse = np.zeros_like(u)
    for t in range(length):
        for s in range(length):
            if s <= t:
                want_causal[:, t] += k[:, t - s] * u[:, s]
            else:
                want_reverse[:, t] += k_rev[:, s - t - 1] * u[:, s]
    with jax.enable_x64(True):
        causal = fft_convolution(jnp.asarray(u), jnp.asarray(k))
        both = fft_convolution(jnp.asarray(u), jnp.asarray(k), jnp.asarray(k_rev))
    np.testing.assert_allclose(causal, want_causal, atol=1e-10)
    np.testing.assert_allclose(both, want_causal + want_reverse, atol=1e-10)
    with pytest.raises(ValueError, match="kernels must be"):
        fft_convolution(jnp.asarray(u), jnp.asarray(k[:, :5]))


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_padded_fft_convolution_is_the_direct_sum_over_real_tokens(impl):
    """Odd sizes, one row padded after 11 of 17 tokens and one padding-free: the causal and
    anti-causal direct sums over the real tokens only, zero outputs and inputs at padding."""
    rng = np.random.default_rng(3)
    batch, length, heads, real = 2, 17, 3, 11
    u = rng.standard_normal((batch, length, heads))
    k, k_rev = rng.standard_normal((heads, length)), rng.standard_normal((heads, length))
    segment_ids = np.stack([np.arange(length) >= real, np.zeros(length, bool)]).astype(np.int32)
    lengths = [real, length]
    want = np.zeros_like(u)
    for b in range(batch):
        for t in range(lengths[b]):
            for s in range(lengths[b]):
                want[b, t] += k[:, t - s] * u[b, s] if s <= t else k_rev[:, s - t - 1] * u[b, s]
    with jax.enable_x64(True):
        y, masked = padded_fft_convolution(jnp.asarray(u), [jnp.asarray(k), jnp.asarray(k_rev)],
                                           segment_ids=jnp.asarray(segment_ids), impl=impl)
        y_plain, unmasked = padded_fft_convolution(jnp.asarray(u), [jnp.asarray(k)], impl=impl)
        causal = fft_convolution(jnp.asarray(u), jnp.asarray(k), impl="reference")
    np.testing.assert_allclose(y, want, atol=1e-10)
    np.testing.assert_array_equal(masked, np.where(segment_ids[..., None] == 0, u, 0.0))
    np.testing.assert_allclose(y_plain, causal, atol=1e-10)
    np.testing.assert_array_equal(unmasked, u)

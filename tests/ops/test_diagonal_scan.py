"""diagonal_scan against a float64 NumPy loop, forward and backward, for both implementations."""

import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import diagonal_scan

IMPLS = ("reference", "xla", "pallas")  # pallas: the Pallas interpreter on CPU


def numpy_scan(a, b, h0, reverse):
    """``h_t = a_t h_{t-1} + b_t`` one step at a time in float64/complex128."""
    a = np.broadcast_to(a, b.shape).astype(np.complex128)
    b = b.astype(np.complex128)
    h = np.array(h0, np.complex128)
    out = np.zeros_like(b)
    times = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
    for t in times:
        h = a[:, t] * h + b[:, t]
        out[:, t] = h
    return out, h


def random_inputs(key, shape, complex_):
    ka, kb, kh, ka2, kb2, kh2 = jax.random.split(key, 6)
    # |a| < 1 keeps the recurrence stable over long T, as in every SSM.
    a = jax.random.uniform(ka, shape, minval=-0.99, maxval=0.99)
    b = jax.random.normal(kb, shape)
    h0 = jax.random.normal(kh, (shape[0], *shape[2:]))
    if complex_:
        a = a * jnp.exp(1j * jax.random.uniform(ka2, shape, maxval=2 * np.pi))
        b = b + 1j * jax.random.normal(kb2, shape)
        h0 = h0 + 1j * jax.random.normal(kh2, h0.shape)
    return a, b, h0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(2, 1, 3), (1, 7, 5), (3, 63, 4, 2)])
def test_matches_numpy_loop(impl, complex_, reverse, shape):
    a, b, h0 = random_inputs(jax.random.key(sum(shape)), shape, complex_)
    h, h_last = diagonal_scan(a, b, h0=h0, reverse=reverse, impl=impl)
    expected, expected_last = numpy_scan(np.asarray(a), np.asarray(b), np.asarray(h0), reverse)
    assert h.dtype == (jnp.complex64 if complex_ else jnp.float32)
    # fp32 with |a| < 1: errors stay near machine epsilon times the state magnitude.
    np.testing.assert_allclose(np.asarray(h), expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(h_last), expected_last, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_initial_state_and_broadcast_transition(impl):
    b = jax.random.normal(jax.random.key(1), (2, 9, 6))
    a = jnp.linspace(0.1, 0.9, 6).reshape(1, 1, 6)
    h, h_last = diagonal_scan(a, b, impl=impl)
    expected, expected_last = numpy_scan(np.asarray(a), np.asarray(b), np.zeros((2, 6)), False)
    np.testing.assert_allclose(np.asarray(h), expected.real, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h_last), expected_last.real, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_agree(complex_, reverse):
    a, b, h0 = random_inputs(jax.random.key(3), (2, 33, 3), complex_)
    weights = jax.random.normal(jax.random.key(4), (2, 33, 3))

    def loss(impl, a, b, h0):
        h, h_last = diagonal_scan(a, b, h0=h0, reverse=reverse, impl=impl)
        return jnp.sum(jnp.real(h) * weights) + jnp.sum(jnp.abs(h_last) ** 2)

    grads = {impl: jax.grad(lambda *args: loss(impl, *args), argnums=(0, 1, 2))(a, b, h0) for impl in IMPLS}
    for impl in IMPLS[1:]:
        for g_ref, g_impl in zip(grads["reference"], grads[impl]):
            np.testing.assert_allclose(np.asarray(g_impl), np.asarray(g_ref), rtol=1e-4, atol=1e-4)


def test_reference_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        a, b, h0 = random_inputs(jax.random.key(5), (1, 6, 2), True)
        a, b, h0 = (x.astype(jnp.complex128) for x in (a, b, h0))
        jax.test_util.check_grads(
            lambda a, b, h0: diagonal_scan(a, b, h0=h0, impl="reference")[0], (a, b, h0), order=1, modes=("rev",)
        )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(a=jnp.ones((4,)), b=jnp.ones((4,))), ValueError, r"`a` must be \[B, T, D, ...\]"),
        # One sequence [T, D] is refused, not read as B = T sequences of length D.
        (dict(a=jnp.ones((9, 3)), b=jnp.ones((9, 3))), ValueError, r"got shape \(9, 3\); for one sequence add a batch"),
        (dict(a=jnp.ones((2, 0, 3)), b=jnp.ones((2, 0, 3))), ValueError, r"`b` is an empty sequence \(T = 0\)"),
        (dict(a=jnp.ones((2, 4, 3)), b=jnp.ones((2, 4, 3, 1))), ValueError, "same rank"),
        (dict(a=jnp.ones((2, 5, 3)), b=jnp.ones((2, 4, 3))), ValueError, "does not broadcast"),
        (dict(a=jnp.ones((2, 4, 3)), b=jnp.ones((2, 1, 3))), ValueError, "not widen"),
        (dict(a=jnp.ones((2, 4, 1), jnp.int32), b=jnp.ones((2, 4, 1))), TypeError, "floating"),
        (dict(a=jnp.ones((2, 4, 3)), b=jnp.ones((2, 4, 3)), h0=jnp.ones((2, 4))), ValueError, "`h0` must have shape"),
        (dict(a=jnp.ones((2, 4, 1)), b=jnp.ones((2, 4, 1)), impl="cuda"), ValueError, "impl='cuda' is not one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        diagonal_scan(**kwargs)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("a_shape", [(1, 1, 5, 1), (3, 1, 5, 2), (1, 1, 1, 2)], ids=str)
def test_time_invariant_transition_matches_reference(complex_, reverse, a_shape):
    """A transition without its time axis (S5, S4D) takes the xla impl's time-invariant backward:
    forward, final state and every gradient equal the reference's (odd T = 37, broadcast axes)."""
    shape = (3, 37, 5, 2)
    a, b, h0 = random_inputs(jax.random.key(6), shape, complex_)
    a = a[tuple(slice(0, n) for n in a_shape)]
    weights = jax.random.normal(jax.random.key(7), shape)

    def loss(impl, a, b, h0):
        h, h_last = diagonal_scan(a, b, h0=h0, reverse=reverse, impl=impl)
        return jnp.sum(jnp.real(h) * weights) + jnp.sum(jnp.abs(h_last) ** 2)

    outputs = {impl: diagonal_scan(a, b, h0=h0, reverse=reverse, impl=impl) for impl in ("reference", "xla")}
    for got, want in zip(outputs["xla"], outputs["reference"]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
    grads = {impl: jax.grad(lambda *args: loss(impl, *args), argnums=(0, 1, 2))(a, b, h0)
             for impl in ("reference", "xla")}
    assert grads["xla"][0].shape == a_shape
    for g_xla, g_ref in zip(grads["xla"], grads["reference"]):
        # da sums T B (features) terms: the tolerance is relative to its scale.
        scale = float(np.max(np.abs(np.asarray(g_ref)))) + 1e-6
        np.testing.assert_allclose(np.asarray(g_xla) / scale, np.asarray(g_ref) / scale, atol=2e-5)

"""Zero-order hold and bilinear discretisation, both implementations, against the definitions in
float64: the ZOH as the integral of the continuous flow, the bilinear transform as one trapezoidal
step of the ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import bilinear_transform, zero_order_hold

RNG = np.random.default_rng(0)
LAM = -RNG.uniform(0.1, 2.0, (3, 5)) + 1j * RNG.uniform(-6, 6, (3, 5))  # [H, P]
STEP = RNG.uniform(1e-3, 0.5, (3, 1))  # [H, 1]


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_zero_order_hold_is_the_flow_and_its_integral(impl):
    """``Lambda_bar = exp(Lambda dt)``, ``gain = int_0^dt exp(Lambda s) ds`` (a 2001-point Simpson rule)."""
    with jax.enable_x64(True):
        lam_bar, gain = zero_order_hold(jnp.asarray(LAM), jnp.asarray(STEP), impl=impl)
    nodes = np.linspace(0.0, 1.0, 2001)[:, None, None] * STEP  # [S, H, 1]
    weights = np.where(np.arange(2001) % 2 == 1, 4.0, 2.0)
    weights[0] = weights[-1] = 1.0
    integral = np.tensordot(weights, np.exp(LAM * nodes), axes=1) * STEP / (3 * 2000)
    np.testing.assert_allclose(lam_bar, np.exp(LAM * STEP), rtol=1e-12)
    np.testing.assert_allclose(gain, integral, rtol=1e-9)


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_bilinear_transform_is_one_trapezoidal_step(impl):
    """``x_1 = x_0 + dt/2 (f(x_0, u) + f(x_1, u))`` with ``f(x, u) = Lambda x + u``, solved for ``x_1``
    from ``x_0 = 1, u = 0`` (the transition) and ``x_0 = 0, u = 1`` (the gain)."""
    with jax.enable_x64(True):
        lam_bar, gain = bilinear_transform(jnp.asarray(LAM), jnp.asarray(STEP), impl=impl)
    lam_bar, gain = np.asarray(lam_bar), np.asarray(gain)
    np.testing.assert_allclose(lam_bar, 1 + STEP / 2 * (LAM + LAM * lam_bar), rtol=1e-12)
    np.testing.assert_allclose(gain, STEP / 2 * (LAM * gain + 2), rtol=1e-12)


@pytest.mark.parametrize("discretize", [zero_order_hold, bilinear_transform])
def test_shapes_broadcast_alike(discretize):
    """Per-mode steps ``[P]`` (S5), per-feature ``[H, 1]`` (S4D), scalars: one shape and dtype for both."""
    for lam, step in ((LAM[0], STEP[:, 0].repeat(2)[:5]), (LAM, STEP), (LAM[0, 0], STEP[0, 0])):
        lam, step = jnp.asarray(lam, jnp.complex64), jnp.asarray(step, jnp.float32)
        got, want = discretize(lam, step, impl="xla"), discretize(lam, step, impl="reference")
        for g, w in zip(got, want):
            assert g.shape == w.shape == jnp.broadcast_shapes(lam.shape, step.shape) and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=2e-6)

"""S4D: the initial spectra, the FFT convolution equal to the recurrence (causal and bidirectional,
every init), ``step`` equal to ``__call__``, and segments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn import S4D
from jaxattn.nn.s4d import SPECTRA, s4d_spectrum
from tests.nn.test_attention_layers import relative_error, run_steps


def test_spectra():
    lam, b = s4d_spectrum("lin", 8)
    np.testing.assert_allclose(lam, -0.5 + 1j * np.pi * np.arange(4))
    lam, _ = s4d_spectrum("inv", 8)
    np.testing.assert_allclose(lam.imag, (8 / np.pi) * (8 / (2 * np.arange(4) + 1) - 1))
    lam, _ = s4d_spectrum("real", 8)
    np.testing.assert_allclose(lam, -(np.arange(4) + 1.0))
    lam, b = s4d_spectrum("legs", 8)
    assert np.allclose(lam.real, -0.5) and (lam.imag > 0).all() and b.shape == (4,)
    lam, b = s4d_spectrum("ptd", 8)  # every eigenvalue of the perturbed HiPPO-LegS, stable
    assert lam.shape == b.shape == (8,) and (lam.real < 0).all()
    with pytest.raises(ValueError, match="must be even"):
        s4d_spectrum("lin", 7)
    with pytest.raises(ValueError, match="is not one of"):
        s4d_spectrum("chebyshev", 8)


@pytest.mark.parametrize("init", SPECTRA)
@pytest.mark.parametrize("causal", [True, False])
def test_convolution_equals_recurrence(init, causal):
    x = jax.random.normal(jax.random.key(0), (2, 23, 5))
    conv = S4D(state_size=8, spectrum=init, causal=causal, dt_min=0.01, dt_max=0.5)
    variables = conv.init(jax.random.key(1), x)
    y_conv = conv.apply(variables, x)
    y_rec = conv.clone(mode="recurrence").apply(variables, x)
    assert relative_error(y_conv, y_rec) < 1e-4


@pytest.mark.parametrize("spectrum", ["legs", "ptd"])
def test_step_equals_call(spectrum):
    model = S4D(state_size=8, spectrum=spectrum, dt_min=0.01, dt_max=0.5)
    x = jax.random.normal(jax.random.key(2), (2, 13, 5))
    variables = model.init(jax.random.key(3), x)
    assert relative_error(run_steps(model, variables, x), model.apply(variables, x)) < 1e-4
    with pytest.raises(ValueError, match="pass `features`"):
        model.init_carry(2)


@pytest.mark.parametrize("causal", [True, False])
def test_segments(causal):
    """Recurrence: packed sequences are independent. Convolution: a sequence followed by padding
    equals the sequence alone."""
    x = jax.random.normal(jax.random.key(4), (1, 12, 5))
    model = S4D(state_size=8, causal=causal, dt_min=0.01, dt_max=0.5, mode="recurrence")
    variables = model.init(jax.random.key(5), x)
    packed = model.apply(variables, x, segment_ids=jnp.array([[0] * 5 + [1] * 7]))
    np.testing.assert_allclose(packed[:, :5], model.apply(variables, x[:, :5]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[:, 5:], model.apply(variables, x[:, 5:]), rtol=1e-5, atol=1e-5)
    conv = model.clone(mode="convolution")
    padded = conv.apply(variables, x, segment_ids=jnp.array([[1] * 9 + [0] * 3]))
    np.testing.assert_allclose(padded[:, :9], conv.apply(variables, x[:, :9]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["recurrence", "convolution"])
def test_segment_ids_must_be_batch_by_length_integers(mode):
    """A ``[1, L]`` array would broadcast over the batch in the recurrence's state resets, and float
    ids would be compared for equality: both are refused in either mode, naming the argument."""
    x = jnp.ones((2, 6, 3))
    model = S4D(state_size=4, mode=mode)
    with pytest.raises(ValueError, match=r"S4D: `segment_ids` must be \[B, L\] = \(2, 6\), got \(1, 6\)"):
        model.init(jax.random.key(0), x, segment_ids=jnp.zeros((1, 6), jnp.int32))
    with pytest.raises(TypeError, match="S4D: `segment_ids` must be integers"):
        model.init(jax.random.key(0), x, segment_ids=jnp.zeros((2, 6), jnp.float32))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"S4D: `segment_ids` must be \[B, L\]"):
        model.apply(variables, x, segment_ids=jnp.zeros((1, 6), jnp.int32))

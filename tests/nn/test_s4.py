"""S4: ``step`` on the full discrete matrix equals the FFT convolution, a shorter input reads the
first taps of the ``l_max`` kernel, bidirectional, padding, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn import S4
from tests.nn.test_attention_layers import relative_error, run_steps


def test_step_equals_call():
    model = S4(state_size=8, l_max=13, dt_min=0.01, dt_max=0.5)
    x = jax.random.normal(jax.random.key(0), (2, 13, 5))
    variables = model.init(jax.random.key(1), x)
    assert relative_error(run_steps(model, variables, x), model.apply(variables, x)) < 1e-3


def test_shorter_inputs_use_the_first_taps_and_padding_is_inert():
    model = S4(state_size=8, l_max=20, causal=False, dt_min=0.01, dt_max=0.5)
    x = jax.random.normal(jax.random.key(2), (1, 20, 5))
    variables = model.init(jax.random.key(3), x)
    causal = model.clone(causal=True)
    causal_variables = {"params": {k: v for k, v in variables["params"].items() if k != "C_reverse"}}
    np.testing.assert_allclose(causal.apply(causal_variables, x[:, :11]), causal.apply(causal_variables, x)[:, :11],
                               rtol=1e-4, atol=1e-5)
    padded = model.apply(variables, x, segment_ids=jnp.array([[1] * 14 + [0] * 6]))
    np.testing.assert_allclose(padded[:, :14], model.apply(variables, x[:, :14]), rtol=1e-4, atol=1e-5)


def test_errors():
    model = S4(state_size=8, l_max=8)
    x = jnp.zeros((1, 9, 3))
    with pytest.raises(ValueError, match="exceeds l_max=8"):
        model.init(jax.random.key(0), x)
    unbounded = S4(state_size=8)
    variables = unbounded.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="set l_max"):
        unbounded.apply(variables, unbounded.init_carry(1, features=3), x[:, 0], method=unbounded.step)

"""The PTD robustness protocol's noise: a cosine in each SSM layer's own time, added to its input."""

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.models import SequenceClassifier
from jaxattn.nn import S4, S4D, S5
from jaxattn.nn.ssm_input_noise import cosine_noise, ssm_input_noise

X = jax.random.normal(jax.random.key(0), (3, 40, 8))


def test_cosine_noise_formula():
    step = jnp.geomspace(1e-3, 1e-1, 8)
    key = jax.random.key(5)
    got = cosine_noise(X, step, 325.4, 0.1, key)
    scale = 0.1 * np.asarray(jax.random.uniform(key, (3, 1, 8)))
    time = np.arange(40)[:, None] * np.asarray(step)[None, :]
    # fp32 phases reach omega * 39 * 0.1 = 1.3e3 rad: a rounding of ~1.5e-4 rad, times the amplitude 0.1.
    np.testing.assert_allclose(got, np.asarray(X) + scale * np.cos(325.4 * time)[None], atol=2e-5)
    assert np.all((scale > 0) & (scale < 0.1))  # eps * U(0, 1), one draw per example and feature


def layer_noise_key(seed, path):
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(path.encode()))


@pytest.mark.parametrize("layer", [S4D(state_size=8, causal=False), S4(state_size=8), S5(state_size=8, blocks=2)],
                         ids=["s4d", "s4", "s5"])
def test_each_layer_sees_its_input_plus_the_cosine_in_its_own_time(layer):
    variables = layer.init(jax.random.key(1), X)
    log_step = np.asarray(nn.unbox(variables["params"]["log_step"]), np.float64)
    # S4 and S4D: one step per feature; S5: one clock per layer, the geometric mean of its states' steps.
    step = np.exp(log_step.mean()) if isinstance(layer, S5) else np.exp(log_step)
    with ssm_input_noise(325.4, 0.3, seed=2):
        noisy = layer.apply(variables, X)
    expected = layer.apply(variables, cosine_noise(X, jnp.asarray(step, jnp.float32), 325.4, 0.3,
                                                   layer_noise_key(2, "")))
    np.testing.assert_allclose(noisy, expected, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(noisy - layer.apply(variables, X)).max()) > 1e-3


def classifier(mixer, options):
    model = SequenceClassifier(num_classes=4, d_model=8, num_layers=2, mixer=mixer, mixer_options=options)
    return model, model.init(jax.random.key(3), X)


def test_every_layer_of_a_model_is_perturbed_reproducibly_and_under_jit():
    model, variables = classifier("s4d", dict(state_size=8, causal=False))
    clean = model.apply(variables, X)
    with ssm_input_noise(325.4, 0.0):
        np.testing.assert_array_equal(model.apply(variables, X), clean)  # eps = 0: the clean model
    with ssm_input_noise(325.4, 1.0, seed=0):
        eager, jitted = model.apply(variables, X), jax.jit(model.apply)(variables, X)
        again = model.apply(variables, X)
    with ssm_input_noise(325.4, 1.0, seed=1):
        other_seed = model.apply(variables, X)
    with ssm_input_noise(30.0, 1.0, seed=0):
        other_omega = model.apply(variables, X)
    np.testing.assert_array_equal(again, eager)
    np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-5)
    for changed in (eager, other_seed, other_omega):
        assert float(jnp.abs(changed - clean).max()) > 1e-3
    assert float(jnp.abs(other_seed - eager).max()) > 1e-4 and float(jnp.abs(other_omega - eager).max()) > 1e-4
    # Noise in the second layer alone is not enough: the first layer's output changes the second's input.
    first_layer_paths = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, S4D) and context.method_name == "__call__":
            first_layer_paths.append("/".join(context.module.scope.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record), ssm_input_noise(325.4, 1.0):
        model.apply(variables, X)
    assert first_layer_paths == ["blocks_0/mixer", "blocks_1/mixer"]


def test_other_mixers_and_initialisation_are_untouched():
    model, variables = classifier("linear_attention", {})
    with ssm_input_noise(325.4, 1.0):
        np.testing.assert_array_equal(model.apply(variables, X), model.apply(variables, X))
        initialised = classifier("s4d", dict(state_size=8))[1]
    reference = classifier("s4d", dict(state_size=8))[1]
    jax.tree.map(np.testing.assert_array_equal, initialised, reference)

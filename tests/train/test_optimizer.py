"""The S5 parameter groups: which parameters, which learning rate, which weight decay."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.models import SequenceClassifier
from jaxattn.train.optimizer import make_optimizer, parameter_groups, parameter_path, warmup_cosine


@pytest.fixture(scope="module")
def params():
    model = SequenceClassifier(
        num_classes=3, d_model=8, num_layers=2, mixer_options=dict(state_size=4, causal=False)
    )
    return nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 5, 2))))["params"]


def test_groups_match_full_paths(params):
    groups = jax.tree_util.tree_leaves_with_path(parameter_groups(params))
    ssm = sorted(parameter_path(path) for path, group in groups if group == "ssm")
    expected = sorted(
        f"blocks_{i}/mixer/{name}" for i in range(2) for name in ("B", "Lambda_im", "Lambda_re", "log_step")
    )
    assert ssm == expected
    assert len(groups) - len(ssm) == len(jax.tree.leaves(params)) - 8


@pytest.mark.parametrize("mixer, names", [
    ("s4d", ("A_imag", "B", "log_A_real", "log_step")),
    ("s4", ("B", "Lambda_imag", "P", "log_Lambda_real", "log_step")),
])
def test_s4_and_s4d_matrices_are_ssm_parameters(mixer, names):
    model = SequenceClassifier(num_classes=3, d_model=8, num_layers=1, mixer=mixer, mixer_options=dict(state_size=4))
    params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 5, 2))))["params"]
    groups = jax.tree_util.tree_leaves_with_path(parameter_groups(params))
    assert sorted(parameter_path(path) for path, group in groups if group == "ssm") == [
        f"blocks_0/mixer/{name}" for name in names
    ]


def test_learning_rates_and_weight_decay_per_group(params):
    lr, ssm_lr, wd = 0.1, 0.01, 0.5
    tx = make_optimizer(lr=lr, ssm_lr=ssm_lr, weight_decay=wd, warmup_steps=0, total_steps=100)
    state = tx.init(params)
    # Adam's first step moves every parameter by lr * sign(gradient), up to the float32 rounding
    # of the bias correction 1 - 0.999 (relative 5e-5, halved by the square root): rtol 1e-4.
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    groups = parameter_groups(params)
    for update, param, group in zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(groups)):
        if group == "ssm":
            np.testing.assert_allclose(update, -ssm_lr, rtol=1e-4)
        else:
            np.testing.assert_allclose(update, -lr - lr * wd * param, rtol=1e-4, atol=1e-4 * lr)


def test_zero_ssm_lr_freezes_the_ssm_parameters(params):
    tx = make_optimizer(lr=0.1, ssm_lr=0.0, weight_decay=0.0, warmup_steps=0, total_steps=100)
    state, current = tx.init(params), params
    for step in range(3):
        grads = jax.tree.map(lambda p: jnp.full_like(p, step + 1.0), current)
        updates, state = tx.update(grads, state, current)
        current = jax.tree.map(lambda p, u: p + u, current, updates)
    for before, after, group in zip(jax.tree.leaves(params), jax.tree.leaves(current),
                                    jax.tree.leaves(parameter_groups(params))):
        if group == "ssm":
            np.testing.assert_array_equal(after, before)
        else:
            assert np.all(np.abs(after - before) > 0.1)  # three Adam steps of lr 0.1 each


def test_warmup_cosine_schedule():
    schedule = warmup_cosine(1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(60)) == pytest.approx(0.55, rel=1e-5)  # cosine midpoint between 1 and 0.1
    assert float(schedule(110)) == pytest.approx(0.1)


def test_gradient_clipping(params):
    tx = make_optimizer(lr=1.0, ssm_lr=1.0, weight_decay=0.0, warmup_steps=0, total_steps=10, grad_clip_norm=1e-3)
    grads = jax.tree.map(lambda p: 1e3 * jnp.ones_like(p), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Clipping scales the gradient, and Adam's first step is scale invariant: still magnitude lr.
    for update in jax.tree.leaves(updates):
        np.testing.assert_allclose(np.abs(update), 1.0, rtol=1e-3)

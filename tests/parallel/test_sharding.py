"""Data-parallel training on 8 fake CPU devices gives the same losses and parameters as on one
(other mesh layouts: test_mesh_presets.py)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxattn.models import SequenceClassifier
from jaxattn.parallel import device_put_batch, make_mesh
from jaxattn.train.optimizer import make_optimizer
from jaxattn.train.steps import create_state, make_eval_step, make_train_step


def random_batches(num_batches, batch_size=16, length=12):
    rng = np.random.default_rng(0)
    return [
        {
            "inputs": rng.normal(size=(batch_size, length, 1)).astype(np.float32),
            "targets": rng.integers(0, 4, batch_size).astype(np.int32),
            "lengths": rng.integers(3, length + 1, batch_size).astype(np.int32),
        }
        for _ in range(num_batches)
    ]


def train(num_devices):
    mesh = make_mesh(data=num_devices)
    model = SequenceClassifier(
        # Post-norm: with pre-norm BatchNorm everywhere the encoder bias has an exactly zero
        # gradient, and Adam would turn its rounding noise into full-size, device-dependent steps.
        num_classes=4, d_model=16, num_layers=2, norm="batch", prenorm=False, dropout=0.1,
        mixer_options=dict(state_size=8, blocks=2, causal=False),
    )
    tx = make_optimizer(lr=1e-2, ssm_lr=5e-3, weight_decay=0.05, warmup_steps=1, total_steps=4)
    batches = random_batches(4)
    state, shardings = create_state(model, tx, batches[0], jax.random.key(0), mesh)
    train_step = make_train_step(model, tx, shardings, mesh)
    losses = []
    for batch in batches:
        global_batch = device_put_batch(batch, mesh)
        assert global_batch["inputs"].sharding.spec == PartitionSpec(("data", "fsdp"), "sequence")
        state, metrics = train_step(state, global_batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    eval_batch = dict(batches[0], weight=np.ones(16, np.float32))
    evaluation = make_eval_step(model, shardings, mesh)(state, device_put_batch(eval_batch, mesh))
    return losses, jax.device_get(state.params), jax.device_get(state.batch_stats), jax.device_get(evaluation), state


def test_eight_devices_equal_one():
    assert jax.device_count() == 8, "tests run with 8 fake CPU devices (tests/conftest.py)"
    losses_1, params_1, stats_1, eval_1, _ = train(1)
    losses_8, params_8, stats_8, eval_8, state_8 = train(8)
    assert len(state_8.params["decoder"]["kernel"].sharding.device_set) == 8
    # The "data" layout: every parameter whole on every device.
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state_8.params))
    # Same math, different reduction order across devices: float32 rounding only.
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((params_8, stats_8, eval_8)), jax.tree.leaves((params_1, stats_1, eval_1))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_must_divide_over_devices():
    mesh = make_mesh(data=8)
    with pytest.raises(ValueError):
        device_put_batch(random_batches(1, batch_size=12)[0], mesh)

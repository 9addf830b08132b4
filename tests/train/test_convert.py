"""Softmax-to-linear conversion pieces: weight transfer, the teacher's queries and keys, distillation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.models import SequenceClassifier
from jaxattn.ops.rotary import apply_rotary
from jaxattn.train.convert import distill_hedgehog_maps, teacher_queries_and_keys, transfer_parameters

ATTENTION = dict(num_heads=2, head_dim=4, causal=False, rotary=True)


def classifier(mixer, **options):
    return SequenceClassifier(num_classes=3, d_model=8, num_layers=2, mixer=mixer, mixer_options={**ATTENTION, **options})


def init(model, x):
    return nn.unbox(model.init(jax.random.key(0), x))


def test_transfer_copies_shared_weights_and_keeps_new_ones():
    x = jax.random.normal(jax.random.key(1), (2, 6, 1))
    teacher = init(classifier("softmax_attention"), x)["params"]
    student = init(classifier("linear_attention", feature_map="hedgehog"), x)["params"]
    merged, fresh = transfer_parameters(teacher, student)
    assert sorted(fresh) == sorted(f"blocks_{i}/mixer/{m}/weight" for i in range(2) for m in ("query_map", "key_map"))
    np.testing.assert_array_equal(merged["blocks_1"]["mixer"]["query"]["kernel"], teacher["blocks_1"]["mixer"]["query"]["kernel"])
    np.testing.assert_array_equal(merged["blocks_0"]["mixer"]["key_map"]["weight"], student["blocks_0"]["mixer"]["key_map"]["weight"])


def test_teacher_queries_and_keys_of_the_first_layer():
    model = classifier("softmax_attention")
    x = jax.random.normal(jax.random.key(2), (2, 6, 1))
    variables = init(model, x)
    lengths = jnp.array([6, 6])
    layers = teacher_queries_and_keys(model, variables, x, lengths, num_heads=2, rotary=True)
    assert len(layers) == 2 and layers[1][0].shape == (2, 6, 2, 4)
    p = variables["params"]
    h = x @ p["encoder"]["kernel"] + p["encoder"]["bias"]
    h = nn.LayerNorm().apply({"params": p["blocks_0"]["norm"]}, h)
    q = (h @ p["blocks_0"]["mixer"]["query"]["kernel"] + p["blocks_0"]["mixer"]["query"]["bias"]).reshape(2, 6, 2, 4)
    np.testing.assert_allclose(layers[0][0], apply_rotary(q, jnp.arange(6)), rtol=1e-5, atol=1e-6)


def test_distillation_lowers_the_loss_and_touches_only_the_maps():
    x = jax.random.normal(jax.random.key(3), (4, 12, 1))
    teacher_model = classifier("softmax_attention")
    teacher = init(teacher_model, x)
    student = init(classifier("linear_attention", feature_map="hedgehog"), x)["params"]
    params, _ = transfer_parameters(teacher["params"], student)
    layers = teacher_queries_and_keys(teacher_model, teacher, 3.0 * x, jnp.full((4,), 12), num_heads=2, rotary=True)
    distilled, losses = distill_hedgehog_maps(params, [layers] * 60, causal=False, learning_rate=0.05)
    assert losses[-1] < losses[0] - 1e-3
    for path, before in jax.tree_util.tree_leaves_with_path(params):
        after = distilled
        for key in path:
            after = after[key.key]
        changed = not np.array_equal(before, after)
        assert changed == any(getattr(k, "key", None) in ("query_map", "key_map") for k in path), path

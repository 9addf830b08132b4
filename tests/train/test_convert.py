"""Softmax-to-linear conversion pieces: weight transfer, the teacher's queries and keys, distillation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.models import SequenceClassifier
from jaxattn.nn.linear_attention import HedgehogFeatureMap
from jaxattn.ops.rotary import apply_rotary
from jaxattn.train.convert import (
    attention_fit, distill_hedgehog_maps, hedgehog_map_params, hedgehog_maps_loss, teacher_queries_and_keys,
    transfer_parameters,
)

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


def student_and_teacher_layers(x):
    """A Hedgehog student holding a fresh teacher's weights, and the teacher's per-layer (q, k) on ``x``."""
    teacher_model = classifier("softmax_attention")
    teacher = init(teacher_model, x)
    student = init(classifier("linear_attention", feature_map="hedgehog"), x)["params"]
    params, _ = transfer_parameters(teacher["params"], student)
    lengths = jnp.full((x.shape[0],), x.shape[1])
    return params, teacher_queries_and_keys(teacher_model, teacher, 3.0 * x, lengths, num_heads=2, rotary=True)


def test_distillation_lowers_the_loss_and_touches_only_the_maps():
    params, layers = student_and_teacher_layers(jax.random.normal(jax.random.key(3), (4, 12, 1)))
    distilled, losses = distill_hedgehog_maps(params, [layers] * 60, causal=False, learning_rate=0.05)
    assert losses[-1] < losses[0] - 1e-3
    for path, before in jax.tree_util.tree_leaves_with_path(params):
        after = distilled
        for key in path:
            after = after[key.key]
        changed = not np.array_equal(before, after)
        assert changed == any(getattr(k, "key", None) in ("query_map", "key_map") for k in path), path


def _fit_reference(q, k, phi_q, phi_k):
    """Query by query in float64: the teacher's softmax row, the student's normalised row, and the
    six statistics of ``attention_fit`` averaged over batch, heads and queries."""
    q, k, phi_q, phi_k = (np.asarray(a, np.float64) for a in (q, k, phi_q, phi_k))
    batch, length, heads, dim = q.shape
    rows = []
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                logits = np.array([q[b, i, h] @ k[b, j, h] / np.sqrt(dim) for j in range(length)])
                a = np.exp(logits - logits.max())
                a /= a.sum()
                s = np.array([phi_q[b, i, h] @ phi_k[b, j, h] for j in range(length)])
                w = s / s.sum()
                entropy, cross_entropy = -np.sum(a * np.log(a)), -np.sum(a * np.log(w))
                rows.append([entropy, a.max(), cross_entropy, cross_entropy - entropy, 0.5 * np.abs(a - w).sum(),
                             float(a.argmax() == w.argmax())])
    keys = ("teacher_entropy", "teacher_max", "cross_entropy", "kl", "total_variation", "top_key_agreement")
    return dict(zip(keys, np.mean(rows, axis=0)))


def test_attention_fit_matches_a_query_by_query_reference():
    x = jax.random.normal(jax.random.key(4), (2, 7, 1))
    teacher_model = classifier("softmax_attention")
    teacher = init(teacher_model, x)
    student = init(classifier("linear_attention", feature_map="hedgehog"), x)["params"]
    layers = teacher_queries_and_keys(teacher_model, teacher, 3.0 * x, jnp.full((2,), 7), num_heads=2, rotary=True)
    maps = hedgehog_map_params(student)
    maps["blocks_1"]["key_map"]["weight"] = maps["blocks_1"]["key_map"]["weight"] + 0.3 * jax.random.normal(
        jax.random.key(5), maps["blocks_1"]["key_map"]["weight"].shape)  # layers differ
    fits = attention_fit(maps, layers, causal=False)
    assert len(fits) == 2
    for layer, fit, name in zip(layers, fits, ("blocks_0", "blocks_1")):
        phi_q, phi_k = (HedgehogFeatureMap().apply({"params": maps[name][part]}, x) for part, x in
                        zip(("query_map", "key_map"), layer))
        expected = _fit_reference(*layer, phi_q, phi_k)
        for key, value in expected.items():
            np.testing.assert_allclose(fit[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    # The layer's cross-entropy is the distillation loss of that layer.
    np.testing.assert_allclose(sum(fit["cross_entropy"] for fit in fits),
                               hedgehog_maps_loss(maps, layers, causal=False), rtol=1e-4)


def test_distillation_weight_decay_is_decoupled_adamw():
    """Adam's first step moves each weight by ``-lr sign(g)``; AdamW's by that plus ``-lr wd W``,
    so the two first steps differ by ``-lr wd W0`` (``W0`` the identity)."""
    params, layers = student_and_teacher_layers(jax.random.normal(jax.random.key(6), (2, 8, 1)))
    lr, wd = 0.01, 0.5
    adam, _ = distill_hedgehog_maps(params, [layers], causal=False, learning_rate=lr)
    adamw, _ = distill_hedgehog_maps(params, [layers], causal=False, learning_rate=lr, weight_decay=wd)
    w0 = params["blocks_0"]["mixer"]["query_map"]["weight"]
    np.testing.assert_allclose(adamw["blocks_0"]["mixer"]["query_map"]["weight"],
                               adam["blocks_0"]["mixer"]["query_map"]["weight"] - lr * wd * w0, atol=1e-6)

"""Hybrid stacks: a per-layer mixer pattern in both models and in the config, decoding through mixed
stacks (recurrent states beside KV caches), and the train step adding the mixers' auxiliary losses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxattn.models import LanguageModel, SequenceClassifier, generate
from jaxattn.nn.registry import AUX_LOSS_COLLECTION, layer_mixers
from jaxattn.parallel import make_mesh
from jaxattn.train import default_config, validate_config
from jaxattn.train.config import mixer_options, mixer_pattern
from jaxattn.train.steps import auxiliary_loss, create_state, make_train_step

DELTA = ("delta_net", dict(num_heads=2, head_dim=8, gated=True, chunk_size=4))
SOFTMAX = ("softmax_attention", dict(num_heads=2, head_dim=8, max_decode_length=24))
MOM = ("mom", dict(num_heads=2, head_dim=8, num_memories=3, top_k=2, chunk_size=4))
# Three recurrent layers, then softmax attention: the layout of current hybrid LLMs.
PATTERN = (DELTA, MOM, DELTA, SOFTMAX)


def hybrid_language_model(num_layers=4):
    return LanguageModel(vocab_size=11, d_model=16, num_layers=num_layers, mixer_pattern=PATTERN)


def test_each_layer_gets_its_mixer_and_the_pattern_repeats():
    assert layer_mixers("s5", {"state_size": 4}, None, 3) == [("s5", {"state_size": 4})] * 3
    layers = layer_mixers("s5", None, PATTERN, 8)
    assert [name for name, _ in layers] == ["delta_net", "mom", "delta_net", "softmax_attention"] * 2
    model = hybrid_language_model()
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 12), jnp.int32))
    mixers = [variables["params"][f"blocks_{i}"]["mixer"] for i in range(4)]
    assert "router" in mixers[1] and "beta" in mixers[0] and "beta" in mixers[2] and "beta" not in mixers[3]


@pytest.mark.parametrize("pattern, num_layers, match", [
    (PATTERN, 6, "num_layers=6 is not a multiple of the mixer pattern's 4 layers"),
    (("delta_net",), 1, r"mixer_pattern\[0\] must be a \(mixer name, options\) pair"),
    ((("nope", {}),), 1, "mixer 'nope' is not registered"),
    ((("delta_net", {"state_size": 3}),), 1, r"mixer 'delta_net' has no option\(s\) \['state_size'\]"),
])
def test_bad_patterns_are_named(pattern, num_layers, match):
    with pytest.raises(ValueError, match=match):
        layer_mixers("s5", None, pattern, num_layers)


def test_a_hybrid_language_model_steps_like_its_call_and_generates():
    """``step`` through recurrent layers and a KV cache equals ``__call__``; ``generate`` follows the
    full model's argmax; the decode capacity is the softmax layer's cache."""
    model = hybrid_language_model()
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 11)
    variables = model.init(jax.random.key(2), tokens)
    assert model.decode_capacity == 24
    step = jax.jit(lambda carry, token: model.apply(variables, carry, token, method=model.step))
    carry, stepped = model.init_carry(2), []
    for t in range(tokens.shape[1]):
        carry, logits = step(carry, tokens[:, t])
        stepped.append(logits)
    full = jax.jit(lambda tokens: model.apply(variables, tokens))
    np.testing.assert_allclose(jnp.stack(stepped, 1), full(tokens), rtol=2e-4, atol=2e-4)

    out = generate(model, variables, tokens[:, :3], max_new_tokens=4)
    expected = tokens[:, :3]
    for _ in range(4):
        expected = jnp.concatenate([expected, jnp.argmax(full(expected)[:, -1], -1)[:, None]], 1)
    np.testing.assert_array_equal(out, expected.astype(out.dtype))
    with pytest.raises(ValueError, match="more than the 24 that the model's mixers decode"):
        generate(model, variables, tokens[:, :3], max_new_tokens=30)


def test_a_bidirectional_layer_anywhere_in_the_pattern_is_refused_by_the_language_model():
    pattern = (DELTA, ("softmax_attention", dict(SOFTMAX[1], causal=False)))
    model = LanguageModel(vocab_size=11, d_model=16, num_layers=2, mixer_pattern=pattern)
    with pytest.raises(ValueError, match=r"layer 1, mixer 'softmax_attention'.*causal=False"):
        model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


def config_with_pattern(**fields):
    config = default_config()
    config.model.mixer = "delta_net"
    # Assigned, not merged (ConfigDict.update would keep the default mixer's options).
    config.model.mixer_options = mixer_options("delta_net", num_heads=2, head_dim=8)
    config.model.update(num_layers=4, mixer_pattern="mixer,mixer,mixer,attention")
    config.model.layer_mixers = {"attention": {"mixer": "softmax_attention",
                                               "mixer_options": {"num_heads": 2, "head_dim": 8}}}
    config.model.update(fields)
    return config


def test_the_config_names_layer_kinds():
    config = config_with_pattern()
    validate_config(config)
    pattern = mixer_pattern(config.model)
    assert [name for name, _ in pattern] == ["delta_net"] * 3 + ["softmax_attention"]
    assert pattern[0][1]["num_heads"] == 2 and pattern[3][1] == mixer_options("softmax_attention", num_heads=2,
                                                                              head_dim=8)
    assert mixer_pattern(default_config().model) is None


@pytest.mark.parametrize("fields, match", [
    (dict(mixer_pattern="mixer,attn"), r"config.model.layer_mixers: \['attention'\] not named"),
    (dict(mixer_pattern="mixer,attention,lstm"), "layer kind 'lstm' is neither 'mixer' nor a key"),
    (dict(num_layers=6), "config.model.num_layers=6 must be a multiple of the 4 layers"),
    (dict(mixer_pattern=""), r"config.model.layer_mixers \(\['attention'\]\) are only used by"),
])
def test_bad_pattern_fields_are_named(fields, match):
    with pytest.raises(ValueError, match=match):
        validate_config(config_with_pattern(**fields))


def test_bad_layer_mixer_entries_are_named():
    config = config_with_pattern()
    config.model.layer_mixers.attention.mixer_options.state_size = 4
    with pytest.raises(ValueError, match=r"layer_mixers.attention.mixer_options: .*no option\(s\) \['state_size'\]"):
        validate_config(config)
    config = config_with_pattern()
    config.model.layer_mixers.attention.mixer = "lstm"
    with pytest.raises(ValueError, match=r"config.model.layer_mixers.attention.mixer='lstm' is not one of"):
        validate_config(config)


def test_the_train_step_adds_the_sown_losses_with_their_weight():
    """The step reports the cross-entropy as ``loss`` and the sown balance loss as ``aux_loss``; the
    gradient is that of ``loss + w aux_loss`` (compared with an explicit ``jax.grad``)."""
    model = SequenceClassifier(num_classes=3, d_model=16, num_layers=2, vocab_size=7, mixer_pattern=(MOM, DELTA))
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(0, 7, (4, 10)).astype(np.int32), "targets": rng.integers(0, 3, 4).astype(np.int32),
             "lengths": np.full(4, 10, np.int32)}
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    tx = optax.sgd(1.0)
    state, shardings = create_state(model, tx, batch, jax.random.key(0), mesh)
    params = jax.device_get(state.params)
    new_state, metrics = make_train_step(model, tx, shardings, mesh, aux_loss_weight=0.5)(state, batch, jax.random.key(1))

    @jax.jit
    def losses(params):
        logits, sown = model.apply({"params": params}, batch["inputs"], batch["lengths"], mutable=[AUX_LOSS_COLLECTION])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean(), auxiliary_loss(sown)

    cross_entropy, aux = losses(params)
    np.testing.assert_allclose(metrics["loss"], cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(metrics["aux_loss"], aux, rtol=1e-5)
    assert 0.0 < float(aux) <= 3.0  # one MoM layer: M sum_m f_m P_m <= M (f and P each sum to 1)
    grads = jax.grad(lambda p: sum(w * loss for w, loss in zip((1.0, 0.5), losses(p))))(params)
    # SGD with rate 1: the parameters moved by exactly minus the gradient.
    moved = jax.tree.map(lambda new, old: old - new, jax.device_get(new_state.params), params)
    for got, want in zip(jax.tree.leaves(moved), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

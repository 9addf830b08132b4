"""SequenceClassifier: masking, pooling, norms, activations and the mixer registry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.models import SequenceClassifier
from jaxattn.nn import MIXERS, MixerBlock, SequenceMixer, register_mixer
from jaxattn.nn.blocks import ACTIVATIONS, last_step, masked_mean

S5_OPTIONS = dict(state_size=8, blocks=2, causal=False)


def make(**kwargs):
    defaults = dict(num_classes=3, d_model=8, num_layers=2, mixer="s5", mixer_options=S5_OPTIONS)
    return SequenceClassifier(**{**defaults, **kwargs})


def test_pooling_functions():
    x = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    lengths = jnp.array([2, 4])
    np.testing.assert_allclose(masked_mean(x, lengths), np.stack([x[0, :2].mean(0), x[1].mean(0)]))
    np.testing.assert_allclose(last_step(x, lengths), np.stack([x[0, 1], x[1, 3]]))


BIDIRECTIONAL_MIXERS = {
    "s5": ("s5", S5_OPTIONS),
    "linear_attention": ("linear_attention", dict(num_heads=2, head_dim=4, causal=False, short_conv=3, chunk_size=4)),
    "softmax_attention": ("softmax_attention", dict(num_heads=2, head_dim=4, causal=False)),
    "tensor_attention": ("tensor_attention", dict(num_heads=2, head_dim=4, causal=False)),
}


@pytest.mark.parametrize("mixer", BIDIRECTIONAL_MIXERS)
@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_does_not_change_logits(mixer, norm, pooling):
    """Real steps never see padding, even through bidirectional mixers (padding is its own segment)."""
    name, options = BIDIRECTIONAL_MIXERS[mixer]
    model = make(norm=norm, pooling=pooling, vocab_size=7, mixer=name, mixer_options=options)
    tokens = jax.random.randint(jax.random.key(0), (2, 10), 1, 7)
    lengths = jnp.array([6, 10])
    variables = model.init(jax.random.key(1), tokens, lengths)
    other_padding = tokens.at[0, 6:].set(jnp.array([3, 1, 4, 2]))
    logits = model.apply(variables, tokens, lengths)
    np.testing.assert_allclose(model.apply(variables, other_padding, lengths), logits, rtol=1e-5, atol=1e-6)
    # ... and the unpadded sequence alone gives the same logits.
    np.testing.assert_allclose(model.apply(variables, tokens[:1, :6], lengths[:1]), logits[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mixer", ["s5", "tensor_attention"])
def test_without_pooling_every_position_is_labelled(mixer):
    """``pooling="none"``: ``[B, L, C]`` logits, and padding still changes no real position's."""
    name, options = BIDIRECTIONAL_MIXERS[mixer]
    model = make(pooling="none", vocab_size=7, mixer=name, mixer_options=options)
    tokens = jax.random.randint(jax.random.key(2), (2, 10), 1, 7)
    lengths = jnp.array([6, 10])
    variables = model.init(jax.random.key(3), tokens, lengths)
    logits = model.apply(variables, tokens, lengths)
    assert logits.shape == (2, 10, 3)
    alone = model.apply(variables, tokens[:1, :6], lengths[:1])
    np.testing.assert_allclose(alone, logits[:1, :6], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.apply(variables, tokens[1:], lengths[1:]), logits[1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("prenorm", [True, False])
def test_activations_and_norm_placement(activation, prenorm):
    model = make(activation=activation, prenorm=prenorm, dropout=0.3)
    x = jax.random.normal(jax.random.key(0), (4, 9, 2))
    variables = model.init(jax.random.key(1), x)
    params = nn.unbox(variables)["params"]
    glu_layers = {"gelu": set(), "half_glu1": {"gate"}, "half_glu2": {"gate"}, "full_glu": {"gate", "value"}}
    assert set(params["blocks_0"]) == {"mixer", "norm"} | glu_layers[activation]
    assert ("final_norm" in params) == prenorm
    eval_logits = model.apply(variables, x)
    assert np.all(np.isfinite(eval_logits))
    train_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    train_b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train_a, train_b), "dropout must be active in training"
    np.testing.assert_allclose(model.apply(variables, x), eval_logits)


class _Identity(nn.Module):
    @nn.compact
    def __call__(self, x, *, segment_ids=None, train=False):
        return x


def test_dropout_mask_is_shared_over_time():
    """Block output minus skip is ``Dropout(gelu(mixer(norm(x))))``: for an input constant in time, so is it."""
    block = MixerBlock(_Identity(), norm="layer", prenorm=False, activation="gelu", dropout=0.5)
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(2), (2, 1, 8)), (2, 6, 8))
    variables = block.init(jax.random.key(0), x)
    block = block.clone(prenorm=True)  # prenorm: the output is exactly skip + dropped
    out = block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    dropped = np.asarray(out - x)
    assert np.all(dropped == dropped[:, :1]), "one mask per example and feature, shared over time"
    assert 0 < np.mean(dropped == 0) < 1


def test_batch_norm_updates_running_statistics():
    model = make(norm="batch")
    x = jax.random.normal(jax.random.key(0), (4, 9, 2)) * 3 + 1
    variables = model.init(jax.random.key(1), x)
    _, updates = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_unknown_mixer_and_option_errors():
    x = jnp.ones((1, 4, 2))
    with pytest.raises(ValueError, match="mixer 'mamba' is not registered"):
        make(mixer="mamba").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"has no option\(s\) \['heads'\]"):
        make(mixer_options=dict(heads=2)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"token inputs must be \[B, L\]"):
        make(vocab_size=5).init(jax.random.key(0), x)


def test_a_new_mixer_plugs_in_by_name():
    with pytest.raises(TypeError, match="must subclass jaxattn.nn.SequenceMixer"):
        register_mixer("test_plain")(nn.Dense)

    @register_mixer("test_identity")
    class Identity(SequenceMixer):
        scale: float = 1.0

        def noncausal_options(self):
            return {}

        @nn.compact
        def __call__(self, x, *, segment_ids=None, train=False):
            return self.scale * x

    try:
        model = make(mixer="test_identity", mixer_options=dict(scale=2.0))
        x = jax.random.normal(jax.random.key(0), (2, 5, 2))
        variables = model.init(jax.random.key(1), x)
        assert "mixer" not in nn.unbox(variables)["params"]["blocks_0"]
        assert model.apply(variables, x).shape == (2, 3)
    finally:
        del MIXERS["test_identity"]

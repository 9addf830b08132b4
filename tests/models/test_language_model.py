"""LanguageModel: causality, step equals __call__ for every decodable mixer, generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.models import LanguageModel, generate

MIXERS = {
    "linear": ("linear_attention", dict(num_heads=2, head_dim=8, chunk_size=4)),
    "linear-gated": ("linear_attention", dict(num_heads=2, head_dim=8, gate="data", feature_map="hedgehog", chunk_size=4)),
    "softmax": ("softmax_attention", dict(num_heads=2, head_dim=8, max_decode_length=32)),
    "s5": ("s5", dict(state_size=8, blocks=2)),
}


def make(name, vocab_size=11):
    mixer, options = MIXERS[name]
    return LanguageModel(vocab_size=vocab_size, d_model=16, num_layers=2, mixer=mixer, mixer_options=options)


@pytest.mark.parametrize("name", MIXERS)
def test_logits_do_not_see_the_future(name):
    model = make(name)
    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, 11)
    variables = model.init(jax.random.key(1), tokens)
    logits = model.apply(variables, tokens)
    changed = model.apply(variables, tokens.at[:, 6:].set((tokens[:, 6:] + 1) % 11))
    np.testing.assert_allclose(changed[:, :6], logits[:, :6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed[:, 6:], logits[:, 6:])


@pytest.mark.parametrize("name", MIXERS)
def test_step_equals_call(name):
    model = make(name)
    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 11)
    variables = model.init(jax.random.key(3), tokens)
    carry = model.init_carry(2)
    stepped = []
    for t in range(9):
        carry, logits_t = model.apply(variables, carry, tokens[:, t], method=model.step)
        stepped.append(logits_t)
    np.testing.assert_allclose(jnp.stack(stepped, 1), model.apply(variables, tokens), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["linear", "softmax"])
def test_greedy_generation_follows_the_argmax_of_the_full_model(name):
    model = make(name)
    prompt = jax.random.randint(jax.random.key(4), (2, 3), 0, 11)
    variables = model.init(jax.random.key(5), prompt)
    out = generate(model, variables, prompt, max_new_tokens=5)
    assert out.shape == (2, 8)
    np.testing.assert_array_equal(out[:, :3], prompt)
    expected = prompt
    for _ in range(5):
        next_token = jnp.argmax(model.apply(variables, expected)[:, -1], axis=-1)
        expected = jnp.concatenate([expected, next_token[:, None].astype(expected.dtype)], axis=1)
    np.testing.assert_array_equal(out, expected)


def test_sampling_uses_the_temperature_and_the_key():
    model = make("linear", vocab_size=50)
    prompt = jnp.zeros((4, 2), jnp.int32)
    variables = model.init(jax.random.key(6), prompt)
    first = generate(model, variables, prompt, max_new_tokens=8, temperature=1.0, rng=jax.random.key(1))
    again = generate(model, variables, prompt, max_new_tokens=8, temperature=1.0, rng=jax.random.key(1))
    other = generate(model, variables, prompt, max_new_tokens=8, temperature=1.0, rng=jax.random.key(2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert int(first.max()) < 50 and int(first.min()) >= 0


def test_non_causal_mixer_is_refused():
    model = LanguageModel(vocab_size=5, mixer="s5", mixer_options=dict(state_size=4, bidirectional=True))
    with pytest.raises(ValueError, match="not causal"):
        model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))

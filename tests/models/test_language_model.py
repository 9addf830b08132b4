"""LanguageModel generation: greedy follows the full model's argmax, sampling, the cache-size check.
Causality and ``step`` for every registered mixer: ``tests/nn/test_mixer_registry.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.models import LanguageModel, generate

MIXERS = {
    "linear": ("linear_attention", dict(num_heads=2, head_dim=8, chunk_size=4)),
    "softmax": ("softmax_attention", dict(num_heads=2, head_dim=8, max_decode_length=32)),
    "gated_delta": ("delta_net", dict(num_heads=2, head_dim=8, gated=True, chunk_size=4)),
}


def make(name, vocab_size=11):
    mixer, options = MIXERS[name]
    return LanguageModel(vocab_size=vocab_size, d_model=16, num_layers=2, mixer=mixer, mixer_options=options)


@pytest.mark.parametrize("name", ["linear", "softmax", "gated_delta"])
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


def test_generate_refuses_more_tokens_than_the_cache_holds_before_tracing():
    model = make("softmax")  # a 32-token KV cache
    prompt = jnp.zeros((1, 30), jnp.int32)
    variables = model.init(jax.random.key(7), prompt)
    assert model.decode_capacity == 32
    with pytest.raises(ValueError, match=r"\(30 tokens\) and max_new_tokens \(3\) make 33 tokens, more than the 32"):
        generate(model, variables, prompt, max_new_tokens=3)
    assert generate(model, variables, prompt, max_new_tokens=2).shape == (1, 32)
    assert make("linear").decode_capacity is None  # a recurrent state decodes without end

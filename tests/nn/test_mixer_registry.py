"""Every registered mixer, with its default options and with each of its ``VARIANTS``:

* its defaults are causal, and it is what it declares: a causal configuration inside a :class:`LanguageModel` gives logits before
  position t that do not move when token t changes; a non-causal one is refused by the language
  model (the message names the option) and really does see later tokens;
* decoding: the language model's ``step`` equals ``__call__`` for the mixer's ``decode_capacity``
  tokens and returns NaN past it, over sequences longer than any cache the mixer keeps (fixed caches
  are shrunk to 8 tokens through the one cache-size option);
* every mixer refuses ``segment_ids`` of another shape than ``[B, L]`` or of a float dtype.

A mixer registered later is covered with no test written for it.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.models import LanguageModel
from jaxattn.nn import MIXERS, SequenceMixer, make_mixer
from jaxattn.nn.registry import CACHE_SIZE_OPTION, mixer_fields
from jaxattn.train.config import mixer_options

VOCAB, WIDTH, LENGTH, SMALL_CACHE = 13, 16, 10, 8


def options_of(name: str, variant: str) -> dict:
    return {} if variant == "default" else dict(MIXERS[name].VARIANTS[variant])


CASES = [(name, variant) for name in sorted(MIXERS) for variant in ("default", *MIXERS[name].VARIANTS)]
CAUSAL_CASES = [case for case in CASES if make_mixer(case[0], options_of(*case)).is_causal]
ids = [f"{name}-{variant}" for name, variant in CASES]


def language_model(name: str, options: dict) -> LanguageModel:
    return LanguageModel(vocab_size=VOCAB, d_model=WIDTH, num_layers=1, mixer=name, mixer_options=options)


def perturbed(tokens: jax.Array, t: int) -> jax.Array:
    return tokens.at[:, t].set((tokens[:, t] + 1) % VOCAB)


def test_every_mixer_has_the_face_and_known_variants():
    assert {"softmax_attention", "linear_attention", "tensor_attention", "s4", "s4d", "s5"} <= set(MIXERS)
    for name, cls in MIXERS.items():
        assert issubclass(cls, SequenceMixer), name
        assert "default" not in cls.VARIANTS, name
        assert isinstance(make_mixer(name, {}).is_causal, bool), name
        # Configs list every option (class variables such as VARIANTS are none) and build from them.
        assert "VARIANTS" not in mixer_fields(cls) and make_mixer(name, mixer_options(name)).is_causal, name


def test_one_option_says_causal_or_bidirectional():
    """Every mixer with a bidirectional form spells it ``causal=False``, and every non-causal variant
    is that option; a mixer without the option must declare its causality itself."""
    for name, cls in MIXERS.items():
        assert "bidirectional" not in mixer_fields(cls), name
        if "causal" in mixer_fields(cls):
            assert make_mixer(name, {"causal": False}).noncausal_options() == {"causal": False}, name
    noncausal = [make_mixer(name, options_of(name, variant)) for name, variant in CASES
                 if (name, variant) not in CAUSAL_CASES]
    assert {type(mixer).__name__ for mixer in noncausal} >= {"S4", "S4D", "S5", "MultiHeadAttention"}
    assert all(mixer.noncausal_options() == {"causal": False} for mixer in noncausal)

    class Undeclared(SequenceMixer):
        def __call__(self, x, *, segment_ids=None, train=False):
            return x

    with pytest.raises(NotImplementedError, match="Undeclared has no `causal` option"):
        Undeclared().is_causal


@pytest.mark.parametrize("name,variant", CASES, ids=ids)
def test_segment_ids_of_another_shape_or_a_float_dtype_are_refused(name, variant):
    """One check (``SequenceMixer.check_sequence``) in every mixer, before any path reads the ids:
    ``[1, L]`` ids for a ``[B, L]`` batch (which would broadcast) and float ids are refused by name."""
    mixer = make_mixer(name, options_of(name, variant))
    x = jnp.ones((2, LENGTH, WIDTH))
    label = type(mixer).__name__
    with pytest.raises(ValueError, match=rf"{label}: `segment_ids` must be \[B, L\] = \(2, {LENGTH}\), got \(1, {LENGTH}\)"):
        mixer.init(jax.random.key(0), x, segment_ids=jnp.zeros((1, LENGTH), jnp.int32))
    with pytest.raises(TypeError, match=rf"{label}: `segment_ids` must be integers"):
        mixer.init(jax.random.key(0), x, segment_ids=jnp.zeros((2, LENGTH), jnp.float32))


@pytest.mark.parametrize("name,variant", CASES, ids=ids)
def test_causal_model_never_sees_later_tokens(name, variant):
    options = options_of(name, variant)
    mixer = make_mixer(name, options)
    tokens = jax.random.randint(jax.random.key(0), (2, LENGTH), 0, VOCAB)
    model = language_model(name, options)
    if not mixer.is_causal:
        assert variant != "default", f"{name}: the default options must be causal, as every attention mixer's are"
        setting = next(iter(mixer.noncausal_options()))
        with pytest.raises(ValueError, match=re.escape(f"{setting}=") + ".*see later tokens"):
            model.init(jax.random.key(1), tokens)
        # The declaration is true: alone, the mixer's early outputs do move with a late input.
        x = jax.random.normal(jax.random.key(2), (2, LENGTH, WIDTH))
        variables = mixer.init(jax.random.key(3), x)
        moved = mixer.apply(variables, x.at[:, -1].add(1.0)) - mixer.apply(variables, x)
        assert float(jnp.max(jnp.abs(moved[:, :-1]))) > 1e-3
        return
    variables = model.init(jax.random.key(1), tokens)
    apply = jax.jit(model.apply)
    logits = apply(variables, tokens)
    for t in (0, 4, LENGTH - 1):
        changed = apply(variables, perturbed(tokens, t))
        np.testing.assert_allclose(changed[:, :t], logits[:, :t], rtol=1e-5, atol=1e-5, err_msg=f"t={t}")
        assert float(jnp.max(jnp.abs(changed[:, t] - logits[:, t]))) > 1e-4, f"token {t} changes nothing"


@pytest.mark.parametrize("name,variant", CAUSAL_CASES, ids=[f"{n}-{v}" for n, v in CAUSAL_CASES])
def test_step_equals_call_then_nan_past_the_cache(name, variant):
    options = options_of(name, variant)
    if CACHE_SIZE_OPTION in mixer_fields(MIXERS[name]):
        options[CACHE_SIZE_OPTION] = SMALL_CACHE
    model = language_model(name, options)
    capacity = model.decode_capacity
    tokens = jax.random.randint(jax.random.key(4), (2, LENGTH + 2 if capacity is None else capacity + 4), 0, VOCAB)
    exact = tokens.shape[1] if capacity is None else capacity
    variables = model.init(jax.random.key(5), tokens[:, : max(exact, 1)])
    carry = model.init_carry(tokens.shape[0])
    step = jax.jit(lambda carry, token: model.apply(variables, carry, token, method=model.step))
    if capacity == 0:
        with pytest.raises(ValueError, match=f"{MIXERS[name].__name__}.step"):
            step(carry, tokens[:, 0])
        return
    stepped = []
    for t in range(tokens.shape[1]):
        carry, logits_t = step(carry, tokens[:, t])
        stepped.append(logits_t)
    stepped = jnp.stack(stepped, axis=1)
    np.testing.assert_allclose(stepped[:, :exact], model.apply(variables, tokens[:, :exact]), rtol=2e-4, atol=2e-4)
    assert bool(jnp.all(jnp.isnan(stepped[:, exact:]))), "past its decode_capacity step must return NaN"

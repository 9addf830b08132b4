"""The models' docstring examples run and give what they state: the shapes, the classifier's
logits of each padded row equal to those of its unpadded tokens, the language model's step logits
equal to its whole-sequence logits and its generation the prompt followed by the greedy tokens."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxattn.models
from tests.nn.test_examples import run_example


def test_classifier_example():
    namespace = run_example(jaxattn.models.SequenceClassifier, jaxattn.models)
    model, variables, tokens, logits = (namespace[name] for name in ("model", "variables", "tokens", "logits"))
    assert logits.shape == (4, 10)
    apply = jax.jit(model.apply)
    for row, length in enumerate([64, 50, 10, 1]):  # the lengths the example passes
        alone = apply(variables, tokens[row:row + 1, :length])
        np.testing.assert_allclose(alone, logits[row:row + 1], rtol=1e-5, atol=1e-6)


def test_language_model_example():
    namespace = run_example(jaxattn.models.LanguageModel, jaxattn.models)
    model, variables, tokens, logits, more = (namespace[name] for name in ("model", "variables", "tokens", "logits",
                                                                           "more"))
    assert logits.shape == (2, 16, 100) and more.shape == (2, 12)
    np.testing.assert_array_equal(more[:, :4], tokens[:, :4])
    step = lambda carry, token: model.apply(variables, carry, token, method=model.step)  # noqa: E731
    _, stepped = jax.lax.scan(step, model.init_carry(2), tokens.T)  # [L, B, vocab]
    np.testing.assert_allclose(jnp.swapaxes(stepped, 0, 1), logits, rtol=2e-4, atol=2e-4)
    # Greedy: each new token is the argmax of the whole model's logits at the position before it.
    np.testing.assert_array_equal(more[:, 4:], jnp.argmax(jax.jit(model.apply)(variables, more)[:, 3:-1], axis=-1))

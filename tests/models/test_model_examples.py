"""The models' docstring examples run and give the shapes they state."""

import jaxattn.models
from tests.nn.test_examples import run_example


def test_classifier_example():
    namespace = run_example(jaxattn.models.SequenceClassifier, jaxattn.models)
    assert namespace["logits"].shape == (4, 10)


def test_language_model_example():
    namespace = run_example(jaxattn.models.LanguageModel, jaxattn.models)
    assert namespace["logits"].shape == (2, 16, 100) and namespace["more"].shape == (2, 12)

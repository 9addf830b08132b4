"""Models: stacks of blocks around a mixer."""

from jaxattn.models.classifier import SequenceClassifier
from jaxattn.models.language_model import LanguageModel, generate

__all__ = ["LanguageModel", "SequenceClassifier", "generate"]

"""Models: stacks of blocks around a mixer."""

from jaxattn.models.classifier import SequenceClassifier

__all__ = ["SequenceClassifier"]

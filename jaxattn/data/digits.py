"""Sequential digits: scikit-learn's 8x8 UCI digits read one pixel at a time.

Each image becomes a length-64 sequence of scalar pixel features (row-major order), so a model must
integrate information over the whole sequence to classify it; a small, fast real-valued task.

See docs/tasks.md#digits.
"""

from __future__ import annotations

from jaxattn.data.pixel_sequences import pixel_sequence_task
from jaxattn.data.tasks import TaskSpec, register_task

NUM_PIXELS = 64
MAX_PIXEL_VALUE = 16.0
NUM_CLASSES = 10


@register_task("digits")
def build_digits_task(*, validation_fraction: float = 0.1, test_fraction: float = 0.2) -> TaskSpec:
    """Builds the sequential-digits task.

    Inputs are float32 [N, 64, 1]: pixels / 16, then standardised with the train split's scalar mean
    and std (so no statistics leak from validation/test). Targets int32 [N] in 0..9; lengths all 64.
    Splits: test = `test_fraction` of the 1797 images, validation = `validation_fraction` of the rest.
    """
    from sklearn.datasets import load_digits  # here, not at import: scikit-learn takes ~1 s to import
    digits = load_digits()
    return pixel_sequence_task("digits", digits.data / MAX_PIXEL_VALUE, digits.target, num_classes=NUM_CLASSES,
                               validation_fraction=validation_fraction, test_fraction=test_fraction)

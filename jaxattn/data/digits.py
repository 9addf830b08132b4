"""Sequential digits: scikit-learn's 8x8 UCI digits read one pixel at a time.

Each image becomes a length-64 sequence of scalar pixel features (row-major order), so a model must
integrate information over the whole sequence to classify it; a small, fast real-valued task.

See docs/tasks.md#digits.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jaxattn.data.tasks import TaskSpec, register_task

NUM_PIXELS = 64
MAX_PIXEL_VALUE = 16.0
NUM_CLASSES = 10
# The split is a property of the task, not of a run, so it uses a fixed seed.
SPLIT_RANDOM_STATE = 0


def split_indices(targets: np.ndarray, *, validation_fraction: float, test_fraction: float
                  ) -> dict[str, np.ndarray]:
    """Stratified, fixed split of row indices.

    Args:
      targets: int [N] class labels used for stratification.
      validation_fraction: fraction of the non-test rows held out for validation.
      test_fraction: fraction of all rows held out for testing.

    Returns:
      "train", "validation", "test" -> sorted int64 row indices; disjoint, covering 0..N-1.
    """
    all_rows = np.arange(len(targets))
    rest, test = train_test_split(all_rows, test_size=test_fraction, stratify=targets,
                                  random_state=SPLIT_RANDOM_STATE)
    train, validation = train_test_split(rest, test_size=validation_fraction, stratify=targets[rest],
                                         random_state=SPLIT_RANDOM_STATE)
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


@register_task("digits")
def build_digits_task(*, validation_fraction: float = 0.1, test_fraction: float = 0.2) -> TaskSpec:
    """Builds the sequential-digits task.

    Inputs are float32 [N, 64, 1]: pixels / 16, then standardised with the train split's scalar mean
    and std (so no statistics leak from validation/test). Targets int32 [N] in 0..9; lengths all 64.
    Splits: test = `test_fraction` of the 1797 images, validation = `validation_fraction` of the rest.
    """
    for option, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{option} must lie in (0, 1), got {fraction!r}")
    digits = load_digits()
    pixels = digits.data.astype(np.float64) / MAX_PIXEL_VALUE  # [1797, 64], row-major pixels
    targets = digits.target.astype(np.int32)
    rows_by_split = split_indices(targets, validation_fraction=validation_fraction, test_fraction=test_fraction)
    train_pixels = pixels[rows_by_split["train"]]
    mean, std = train_pixels.mean(), train_pixels.std()
    splits = {}
    for split, rows in rows_by_split.items():
        features = ((pixels[rows] - mean) / std).astype(np.float32)[:, :, None]
        splits[split] = {
            "inputs": features,
            "targets": targets[rows],
            "lengths": np.full(len(rows), NUM_PIXELS, dtype=np.int32),
        }
    return TaskSpec(name="digits", num_classes=NUM_CLASSES, seq_len=NUM_PIXELS, vocab_size=None,
                    feature_dim=1, splits=splits)

"""Images read one pixel at a time: the split and standardisation shared by the pixel-sequence tasks.

A grey image of ``L`` pixels becomes a length-``L`` sequence of scalar features (row-major order,
optionally permuted), so a model must integrate information over the whole sequence to classify it.
Used by ``digits`` (8x8, L = 64) and ``smnist`` / ``psmnist`` (28x28, L = 784).

See docs/tasks.md#digits and docs/tasks.md#smnist-and-psmnist.
"""

from __future__ import annotations

import numpy as np

from jaxattn.data.lra.common import check_fraction
from jaxattn.data.tasks import TaskSpec

# The split is a property of a task, not of a run, so it uses a fixed seed.
SPLIT_RANDOM_STATE = 0


def _stratified_split(rows: np.ndarray, targets: np.ndarray, **sizes) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's stratified ``train_test_split`` of ``rows`` with the fixed seed.

    scikit-learn is imported here, not with the package: the import takes about a second and most
    processes (every task but the pixel-sequence ones) never split this way.
    """
    from sklearn.model_selection import train_test_split
    return train_test_split(rows, stratify=targets, random_state=SPLIT_RANDOM_STATE, **sizes)


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
    rest, test = _stratified_split(all_rows, targets, test_size=test_fraction)
    train, validation = _stratified_split(rest, targets[rest], test_size=validation_fraction)
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


def stratified_subset(targets: np.ndarray, num_rows: int) -> np.ndarray:
    """Sorted indices of a fixed stratified subset of ``num_rows`` rows (every class in proportion).

    Raises ValueError unless ``num_rows`` lies in [10 x the number of classes, N]: each split of
    the subset must still hold every class.
    """
    num_classes = len(np.unique(targets))
    if not 10 * num_classes <= num_rows <= len(targets):
        raise ValueError(f"num_images={num_rows} must lie in [{10 * num_classes}, {len(targets)}]")
    if num_rows == len(targets):
        return np.arange(num_rows)
    rows, _ = _stratified_split(np.arange(len(targets)), targets, train_size=num_rows)
    return np.sort(rows)


def pixel_sequence_task(name: str, pixels: np.ndarray, targets: np.ndarray, *, num_classes: int,
                        validation_fraction: float, test_fraction: float,
                        order: np.ndarray | None = None) -> TaskSpec:
    """A classification task whose inputs are images read pixel by pixel.

    Args:
      name: the task's registry name.
      pixels: float [N, L] intensities scaled to [0, 1], row-major.
      targets: int [N] labels in 0..num_classes-1.
      num_classes: number of classes.
      validation_fraction, test_fraction: see `split_indices` (checked to lie in (0, 1)).
      order: optional int [L] permutation; sequence position t reads pixel ``order[t]``.

    Returns:
      A `TaskSpec` with inputs float32 [n, L, 1], standardised with the train split's scalar mean
      and std (no statistics leak from validation or test), targets int32 [n], lengths all L.
    """
    check_fraction("validation_fraction", validation_fraction, allow_zero=False)
    check_fraction("test_fraction", test_fraction, allow_zero=False)
    pixels = np.asarray(pixels, dtype=np.float64)
    if order is not None:
        pixels = pixels[:, order]
    targets = np.asarray(targets, dtype=np.int32)
    length = pixels.shape[1]
    rows_by_split = split_indices(targets, validation_fraction=validation_fraction, test_fraction=test_fraction)
    train_pixels = pixels[rows_by_split["train"]]
    mean, std = train_pixels.mean(), train_pixels.std()
    splits = {}
    for split, rows in rows_by_split.items():
        splits[split] = {
            "inputs": ((pixels[rows] - mean) / std).astype(np.float32)[:, :, None],
            "targets": targets[rows],
            "lengths": np.full(len(rows), length, dtype=np.int32),
        }
    return TaskSpec(name=name, num_classes=num_classes, seq_len=length, vocab_size=None, feature_dim=1,
                    splits=splits)

"""Tests for the sequential-digits task: shapes, split sizes, disjointness, standardisation."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxattn.data import load_task


@pytest.fixture(scope="module")
def task():
    return load_task("digits")


def test_spec(task):
    assert (task.name, task.num_classes, task.seq_len, task.vocab_size, task.feature_dim) == (
        "digits", 10, 64, None, 1)


def test_shapes_dtypes_and_split_sizes(task):
    sizes = {}
    for split, arrays in task.splits.items():
        size = len(arrays["targets"])
        sizes[split] = size
        assert arrays["inputs"].shape == (size, 64, 1) and arrays["inputs"].dtype == np.float32
        assert arrays["targets"].dtype == np.int32 and arrays["lengths"].dtype == np.int32
        np.testing.assert_array_equal(arrays["lengths"], 64)
        assert set(np.unique(arrays["targets"])) == set(range(10))
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360  # 20 % of 1797, rounded up by scikit-learn
    assert sizes["validation"] == 144  # 10 % of the remaining 1437


def undo_standardisation(task):
    """Recovers raw 0..16 pixels [N, 64] per split, using only the train split's statistics."""
    train = task.splits["train"]["inputs"][:, :, 0].astype(np.float64)
    # Train-standardised train pixels have mean 0 / std 1, so raw = 16 * (z * std + mean); the scalar
    # mean/std are found by matching the smallest raw value (0) and the pixel grid spacing (1/16).
    values = np.unique(np.round(train, 5))
    mean_over_std = -values[0]  # raw 0 maps to -mean/std (every split contains black pixels)
    std = 1 / 16 / np.min(np.diff(values))
    return {split: np.round(16 * (arrays["inputs"][:, :, 0] + mean_over_std) * std).astype(int)
            for split, arrays in task.splits.items()}


def test_standardised_with_train_statistics(task):
    train = task.splits["train"]["inputs"].astype(np.float64)
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-5
    held_out = task.splits["test"]["inputs"].astype(np.float64)
    assert abs(held_out.mean()) > 1e-4  # standardised with train, not its own, statistics


def test_splits_are_disjoint_and_match_the_raw_images(task):
    raw = load_digits()
    raw_label_by_image = {tuple(row): target for row, target in zip(raw.data.astype(int).tolist(), raw.target)}
    assert len(raw_label_by_image) == 1797  # the raw images are distinct, so images identify rows
    split_by_image = {}
    for split, pixels in undo_standardisation(task).items():
        for image, target in zip(map(tuple, pixels.tolist()), task.splits[split]["targets"]):
            assert raw_label_by_image[image] == target  # a real image (row-major pixels) with its label
            assert image not in split_by_image, f"image in both {split_by_image[image]} and {split}"
            split_by_image[image] = split
    assert len(split_by_image) == 1797


def test_deterministic(task):
    again = load_task("digits")
    for split in task.splits:
        np.testing.assert_array_equal(again.splits[split]["inputs"], task.splits[split]["inputs"])
        np.testing.assert_array_equal(again.splits[split]["targets"], task.splits[split]["targets"])


def test_bad_fraction_raises():
    with pytest.raises(ValueError, match="test_fraction"):
        load_task("digits", test_fraction=1.5)

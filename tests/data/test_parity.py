"""Tests for the parity task: labels, lengths, padding, determinism."""

import numpy as np
import pytest

from jaxattn.data import load_task


@pytest.fixture(scope="module")
def task():
    return load_task("parity", num_train=500, num_validation=50, num_test=60, min_length=3, max_length=20,
                     seed=1)


def test_spec_and_shapes(task):
    assert (task.num_classes, task.seq_len, task.vocab_size, task.feature_dim) == (2, 20, 3, None)
    for split, size in (("train", 500), ("validation", 50), ("test", 60)):
        arrays = task.splits[split]
        assert arrays["inputs"].shape == (size, 20) and arrays["inputs"].dtype == np.int32
        assert arrays["targets"].shape == (size,) and arrays["targets"].dtype == np.int32
        assert arrays["lengths"].shape == (size,) and arrays["lengths"].dtype == np.int32


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_labels_are_xor_of_bits_and_padding_follows_length(task, split):
    arrays = task.splits[split]
    for tokens, target, length in zip(arrays["inputs"], arrays["targets"], arrays["lengths"]):
        assert 3 <= length <= 20
        assert set(tokens[:length].tolist()) <= {1, 2}
        assert not tokens[length:].any()
        parity = 0
        for token in tokens[:length]:
            parity ^= int(token == 2)
        assert target == parity


def test_lengths_span_the_range_and_labels_are_roughly_balanced(task):
    arrays = task.splits["train"]
    assert arrays["lengths"].min() == 3 and arrays["lengths"].max() == 20
    assert 0.4 < arrays["targets"].mean() < 0.6


def test_deterministic_per_seed_and_splits_differ(task):
    again = load_task("parity", num_train=500, num_validation=50, num_test=60, min_length=3, max_length=20,
                      seed=1)
    other = load_task("parity", num_train=500, num_validation=50, num_test=60, min_length=3, max_length=20,
                      seed=2)
    np.testing.assert_array_equal(again.splits["train"]["inputs"], task.splits["train"]["inputs"])
    assert not np.array_equal(other.splits["train"]["inputs"], task.splits["train"]["inputs"])
    assert not np.array_equal(task.splits["validation"]["inputs"], task.splits["test"]["inputs"][:50])


def test_bad_lengths_raise():
    with pytest.raises(ValueError, match="min_length"):
        load_task("parity", min_length=10, max_length=5)

"""Tests for ListOps: labels checked by an independent evaluator, lengths, vocabulary, determinism, cache."""

import os
import statistics
import time

import numpy as np
import pytest

from jaxattn.data import load_task
from jaxattn.data.listops import apply_operator, generate_listops

# The documented vocabulary, written out independently of the implementation: 0 is padding.
VOCABULARY = ["<pad>", "[MAX", "[MIN", "[MED", "[SM", "]", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

SMALL_OPTIONS = dict(num_train=300, num_validation=40, num_test=50, min_length=16, max_length=128, max_depth=4)


def evaluate(tokens):
    """Value of a token-string expression, by plain recursive descent (independent of the generator)."""

    def parse(position):
        token = tokens[position]
        if token.isdigit():
            return int(token), position + 1
        assert token in ("[MAX", "[MIN", "[MED", "[SM"), token
        values, position = [], position + 1
        while tokens[position] != "]":
            value, position = parse(position)
            values.append(value)
        assert len(values) >= 2
        if token == "[MAX":
            result = max(values)
        elif token == "[MIN":
            result = min(values)
        elif token == "[MED":
            result = int(np.median(values))
        else:
            result = sum(values) % 10
        return result, position + 1

    value, end = parse(0)
    assert end == len(tokens), "trailing tokens after the expression"
    return value


def max_nesting(tokens):
    depth = deepest = 0
    for token in tokens:
        depth += token.startswith("[")
        depth -= token == "]"
        deepest = max(deepest, depth)
    return deepest


@pytest.fixture(scope="module")
def task():
    return load_task("listops", **SMALL_OPTIONS, seed=3)


def test_spec(task):
    assert (task.name, task.num_classes, task.seq_len, task.vocab_size, task.feature_dim) == (
        "listops", 10, 128, 16, None)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_labels_match_independent_evaluation(task, split):
    arrays = task.splits[split]
    assert arrays["inputs"].dtype == np.int32 and arrays["inputs"].shape[1] == 128
    assert arrays["targets"].dtype == np.int32 and arrays["lengths"].dtype == np.int32
    for ids, target, length in zip(arrays["inputs"], arrays["targets"], arrays["lengths"]):
        assert 16 <= length <= 128
        assert (ids[:length] > 0).all() and not ids[length:].any()
        tokens = [VOCABULARY[token_id] for token_id in ids[:length]]
        assert tokens[0].startswith("[")
        assert evaluate(tokens) == target
        assert max_nesting(tokens) <= 3  # operators only at depths < max_depth = 4


def test_split_sizes_and_label_spread(task):
    assert [len(task.splits[split]["targets"]) for split in ("train", "validation", "test")] == [300, 40, 50]
    assert set(task.splits["train"]["targets"].tolist()) == set(range(10))
    assert set(np.unique(task.splits["train"]["inputs"]).tolist()) == set(range(16))


@pytest.mark.parametrize("values", [[3, 1], [1, 2, 9, 4], [7, 0, 5], [5, 5, 2, 8, 9, 0], [9, 8]])
def test_median_matches_lra_integer_median(values):
    assert apply_operator(2, values) == int(np.median(values)) == int(statistics.median(values))


def test_deterministic_per_seed_and_splits_differ(task):
    again = load_task("listops", **SMALL_OPTIONS, seed=3)
    other = load_task("listops", **SMALL_OPTIONS, seed=4)
    for split in task.splits:
        for key in task.splits[split]:
            np.testing.assert_array_equal(again.splits[split][key], task.splits[split][key])
    assert not np.array_equal(other.splits["train"]["inputs"], task.splits["train"]["inputs"])
    assert not np.array_equal(task.splits["validation"]["inputs"], task.splits["test"]["inputs"][:40])


def test_cache_round_trip_and_distinct_files_per_option(tmp_path):
    first = load_task("listops", **SMALL_OPTIONS, seed=5, cache_dir=tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 1 and files[0].endswith(".npz")
    # Overwrite the cached arrays with a marker: a second load must read the file, not regenerate.
    path = tmp_path / files[0]
    with np.load(path) as archive:
        contents = {name: archive[name] for name in archive.files}
    contents["train/targets"] = np.full_like(contents["train/targets"], 7)
    np.savez(path, **contents)
    cached = load_task("listops", **SMALL_OPTIONS, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.splits["train"]["targets"], 7)
    np.testing.assert_array_equal(cached.splits["test"]["inputs"], first.splits["test"]["inputs"])
    assert cached.splits["test"]["inputs"].dtype == np.int32

    load_task("listops", **SMALL_OPTIONS, seed=6, cache_dir=tmp_path)
    load_task("listops", **{**SMALL_OPTIONS, "max_args": 5}, seed=5, cache_dir=tmp_path)
    assert len(os.listdir(tmp_path)) == 3


def test_generation_is_fast_enough_for_medium_lengths():
    start = time.perf_counter()
    arrays = generate_listops(2000, rng=np.random.default_rng(0), min_length=100, max_length=200, max_depth=6)
    assert time.perf_counter() - start < 10
    assert arrays["lengths"].min() >= 100 and arrays["lengths"].max() <= 200


def test_unreachable_length_bounds_raise_instead_of_looping():
    with pytest.raises(ValueError, match="min_length"):
        generate_listops(5, rng=np.random.default_rng(0), min_length=200, max_length=300, max_depth=3)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="widen"):
        generate_listops(5, rng=np.random.default_rng(0), min_length=100, max_length=110, max_depth=3)
    assert time.perf_counter() - start < 5


def test_negative_split_size_is_named():
    with pytest.raises(ValueError, match="num_validation must be >= 0, got -1"):
        load_task("listops", **{**SMALL_OPTIONS, "num_validation": -1})


def test_unknown_task_and_option_are_named():
    with pytest.raises(ValueError, match="listops"):
        load_task("no_such_task")
    with pytest.raises(TypeError, match="max_lenght"):
        load_task("listops", max_lenght=100)

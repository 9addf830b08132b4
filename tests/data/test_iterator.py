"""Tests for jaxattn.data.iterator: determinism, coverage, resumption, sharding, eval padding, errors."""

import itertools
import json

import numpy as np
import pytest

from jaxattn.data.iterator import ArrayIterator, eval_batches


def make_arrays(num_rows=23):
    """Rows are identifiable: row i has id i and inputs encoding i."""
    ids = np.arange(num_rows, dtype=np.int32)
    return {"ids": ids, "inputs": np.stack([ids * 10, ids * 10 + 1], axis=1).astype(np.float32)}


def take(iterator, count):
    return list(itertools.islice(iterator, count))


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for batch_a, batch_b in zip(first, second):
        assert batch_a.keys() == batch_b.keys()
        for key in batch_a:
            np.testing.assert_array_equal(batch_a[key], batch_b[key])


def test_batches_have_local_shape_and_keep_rows_aligned():
    batch = next(ArrayIterator(make_arrays(), batch_size=4, seed=0))
    assert batch["ids"].shape == (4,) and batch["inputs"].shape == (4, 2)
    np.testing.assert_array_equal(batch["inputs"][:, 0], batch["ids"] * 10)


def test_same_seed_same_batches_and_different_seed_different_batches():
    arrays = make_arrays()
    first = take(ArrayIterator(arrays, batch_size=5, seed=3), 10)
    second = take(ArrayIterator(arrays, batch_size=5, seed=3), 10)
    other = take(ArrayIterator(arrays, batch_size=5, seed=4), 10)
    assert_batches_equal(first, second)
    assert not all(np.array_equal(a["ids"], b["ids"]) for a, b in zip(first, other))


def test_each_epoch_visits_rows_once_and_drops_the_incomplete_tail():
    iterator = ArrayIterator(make_arrays(23), batch_size=5, seed=1)
    assert iterator.steps_per_epoch == 4 and iterator.num_examples == 23
    epochs = []
    for _ in range(3):
        ids = np.concatenate([batch["ids"] for batch in take(iterator, iterator.steps_per_epoch)])
        assert len(ids) == 20 and len(np.unique(ids)) == 20  # no row twice within an epoch
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled per epoch
    # The order is the documented one: default_rng((seed, epoch)).permutation(N), truncated.
    np.testing.assert_array_equal(epochs[2], np.random.default_rng((1, 2)).permutation(23)[:20])


def test_full_batches_cover_every_row_exactly_once_per_epoch():
    iterator = ArrayIterator(make_arrays(24), batch_size=6, seed=7)
    ids = np.concatenate([batch["ids"] for batch in take(iterator, 4)])
    np.testing.assert_array_equal(np.sort(ids), np.arange(24))


def test_no_shuffle_keeps_stored_order():
    iterator = ArrayIterator(make_arrays(10), batch_size=3, seed=0, shuffle=False)
    ids = [batch["ids"].tolist() for batch in take(iterator, 4)]
    assert ids == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]


@pytest.mark.parametrize("steps_before_save", [0, 2, 4, 5, 9])  # start, mid-epoch, boundary, later epochs
def test_restored_iterator_continues_identically(steps_before_save):
    arrays = make_arrays(23)
    original = ArrayIterator(arrays, batch_size=5, seed=11)
    take(original, steps_before_save)
    state = json.loads(json.dumps(original.get_state()))  # must survive JSON
    expected = take(original, 10)

    restored = ArrayIterator(arrays, batch_size=5, seed=11)
    take(restored, 3)  # its own position must not matter
    restored.set_state(state)
    assert_batches_equal(take(restored, 10), expected)


def test_state_counts_epochs_and_batches():
    iterator = ArrayIterator(make_arrays(23), batch_size=5, seed=0)
    take(iterator, 6)
    state = iterator.get_state()
    assert (state["epoch"], state["batch_in_epoch"], state["seed"]) == (1, 2, 0)


def test_set_state_rejects_state_from_a_different_configuration():
    arrays = make_arrays(23)
    state = ArrayIterator(arrays, batch_size=5, seed=1).get_state()
    with pytest.raises(ValueError, match="seed"):
        ArrayIterator(arrays, batch_size=5, seed=2).set_state(state)
    with pytest.raises(ValueError, match="batch_size"):
        ArrayIterator(arrays, batch_size=4, seed=1).set_state(state)


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shards_concatenate_to_the_global_batch(process_count):
    arrays = make_arrays(40)
    global_batches = take(ArrayIterator(arrays, batch_size=6, seed=5), 9)
    local_batches = [take(ArrayIterator(arrays, batch_size=6, seed=5, process_index=index,
                                        process_count=process_count), 9)
                     for index in range(process_count)]
    for step, global_batch in enumerate(global_batches):
        for key in global_batch:
            parts = [local_batches[index][step][key] for index in range(process_count)]
            assert all(len(part) == 6 // process_count for part in parts)
            np.testing.assert_array_equal(np.concatenate(parts), global_batch[key])


@pytest.mark.parametrize("num_rows,batch_size,process_count", [(10, 4, 1), (10, 4, 2), (7, 9, 3), (12, 6, 2)])
def test_eval_batches_cover_rows_once_in_order_with_padding_weights(num_rows, batch_size, process_count):
    arrays = make_arrays(num_rows)
    per_process = [list(eval_batches(arrays, batch_size=batch_size, process_index=index,
                                     process_count=process_count))
                   for index in range(process_count)]
    num_batches = -(-num_rows // batch_size)
    assert all(len(batches) == num_batches for batches in per_process)
    global_ids, global_weights = [], []
    for step in range(num_batches):
        for index in range(process_count):
            batch = per_process[index][step]
            assert batch["weight"].dtype == np.float32
            assert batch["weight"].shape == batch["ids"].shape == (batch_size // process_count,)
            np.testing.assert_array_equal(batch["inputs"][:, 0], batch["ids"] * 10)
            global_ids.append(batch["ids"])
            global_weights.append(batch["weight"])
    ids, weights = np.concatenate(global_ids), np.concatenate(global_weights)
    num_padding = num_batches * batch_size - num_rows
    np.testing.assert_array_equal(ids[weights == 1.0], np.arange(num_rows))  # every row once, in order
    np.testing.assert_array_equal(weights, np.r_[np.ones(num_rows), np.zeros(num_padding)])
    np.testing.assert_array_equal(ids[num_rows:], np.zeros(num_padding))  # padding repeats row 0


@pytest.mark.parametrize("kwargs,argument", [
    (dict(arrays={}, batch_size=2), "arrays"),
    (dict(arrays={"a": np.zeros(5), "b": np.zeros(6)}, batch_size=2), "leading size"),
    (dict(arrays=make_arrays(5), batch_size=0), "batch_size"),
    (dict(arrays=make_arrays(5), batch_size=-1), "batch_size"),
    (dict(arrays=make_arrays(5), batch_size=3, process_count=2), "batch_size"),
    (dict(arrays=make_arrays(5), batch_size=2, process_index=2, process_count=2), "process_index"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ArrayIterator(**kwargs, seed=0)
    with pytest.raises(ValueError, match=argument):
        eval_batches(**kwargs)  # validated at call time, before iteration


def test_training_batch_larger_than_dataset_raises_but_eval_pads():
    with pytest.raises(ValueError, match="batch_size"):
        ArrayIterator(make_arrays(5), batch_size=6, seed=0)
    (batch,) = eval_batches(make_arrays(5), batch_size=6)
    assert batch["weight"].tolist() == [1, 1, 1, 1, 1, 0]


def test_negative_seed_raises():
    with pytest.raises(ValueError, match="seed"):
        ArrayIterator(make_arrays(5), batch_size=2, seed=-1)

"""Word problems: the tables are the groups, targets are running products, splits, seeding, per-length accuracy."""

import itertools
import json
import math

import numpy as np
import pytest

from jaxattn.data import ArrayIterator, load_task
from jaxattn.data.word_problem import (
    GROUP_NAMES, IDENTITY, accuracy_by_length, flatten_by_length, generate_word_problem, get_group,
)

ORDERS = {"Z2": 2, "Z3": 3, "Z5": 5, "S3": 6, "S4": 24, "A5": 60, "S5": 120}


def compose(sigma, tau):
    """(sigma . tau)(i) = sigma(tau(i)), on plain tuples."""
    return tuple(sigma[tau[i]] for i in range(len(tau)))


def small_task(**options):
    options = dict(dict(group="S3", train_length=6, test_lengths=(6, 9, 12), num_train=40, num_validation=10,
                        num_test_per_length=7, seed=3), **options)
    return load_task("word_problem", **options)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_table_is_a_group(name):
    group = get_group(name)
    table, order = group.table, group.order
    assert order == ORDERS[name] and table.shape == (order, order)
    assert table.min() >= 0 and table.max() < order  # closure
    assert all(sorted(row) == list(range(order)) for row in table.tolist())  # Latin square
    assert all(sorted(column) == list(range(order)) for column in table.T.tolist())
    np.testing.assert_array_equal(table[IDENTITY], np.arange(order))  # identity
    np.testing.assert_array_equal(table[:, IDENTITY], np.arange(order))
    np.testing.assert_array_equal(table[np.arange(order), group.inverse], IDENTITY)  # inverses
    np.testing.assert_array_equal(table[group.inverse, np.arange(order)], IDENTITY)
    if order <= 24:  # associativity, exhaustively
        a, b, c = np.meshgrid(*[np.arange(order)] * 3, indexing="ij")
        np.testing.assert_array_equal(table[table[a, b], c], table[a, table[b, c]])
    else:
        a, b, c = np.random.default_rng(0).integers(0, order, size=(3, 20_000))
        np.testing.assert_array_equal(table[table[a, b], c], table[a, table[b, c]])


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_table_agrees_with_composing_tuples(name):
    group = get_group(name)
    elements = [tuple(e) for e in group.elements.tolist()]
    assert len(set(elements)) == group.order and elements[IDENTITY] == tuple(range(len(elements[0])))
    index = {e: k for k, e in enumerate(elements)}
    pairs = itertools.product(range(group.order), repeat=2) if group.order <= 24 else \
        np.random.default_rng(1).integers(0, group.order, size=(500, 2)).tolist()
    for a, b in pairs:
        assert group.table[a, b] == index[compose(elements[a], elements[b])]


def test_enumeration_order_and_a5_is_the_even_permutations():
    for n in (3, 4, 5):
        assert [tuple(e) for e in get_group(f"S{n}").elements.tolist()] == list(itertools.permutations(range(n)))

    def sign(p):
        return (-1) ** sum(p[i] > p[j] for i in range(len(p)) for j in range(i + 1, len(p)))

    even = [p for p in itertools.permutations(range(5)) if sign(p) == 1]
    assert [tuple(e) for e in get_group("A5").elements.tolist()] == even and len(even) == 60
    # Zn is addition mod n.
    for n in (2, 3, 5):
        table = get_group(f"Z{n}").table
        np.testing.assert_array_equal(table, np.add.outer(np.arange(n), np.arange(n)) % n)


def test_s3_is_not_abelian_and_the_product_order_is_documented():
    group = get_group("S3")
    assert not np.array_equal(group.table, group.table.T)
    # p_2 = x_1 . x_2 = x_1 o x_2: x_2 acts first.
    x1, x2 = (1, 0, 2), (0, 2, 1)
    a, b = (group.elements.tolist().index(list(x)) for x in (x1, x2))
    assert tuple(group.elements[group.running_product(np.array([a, b]))[1]]) == (1, 2, 0) == compose(x1, x2)


@pytest.mark.parametrize("name", ["S3", "A5", "S5", "Z5"])
def test_targets_are_running_products_of_the_tuples(name):
    group = get_group(name)
    elements = [tuple(e) for e in group.elements.tolist()]
    index = {e: k for k, e in enumerate(elements)}
    data = generate_word_problem(np.array([1, 5, 17, 20]), group=name, seq_len=20, rng=np.random.default_rng(2))
    for tokens, targets, length in zip(data["inputs"], data["targets"], data["lengths"]):
        product = elements[IDENTITY]
        for t in range(length):
            assert 1 <= tokens[t] <= group.order
            product = compose(product, elements[tokens[t] - 1])
            assert targets[t] == index[product]
        assert not tokens[length:].any() and np.all(targets[length:] == -1)


def test_z2_is_parity_and_the_identity_can_be_excluded():
    task = load_task("word_problem", group="Z2", train_length=30, test_lengths=(30,), num_train=50,
                     num_validation=5, num_test_per_length=5)
    inputs, targets = task.splits["train"]["inputs"], task.splits["train"]["targets"]
    np.testing.assert_array_equal(targets, np.cumsum(inputs == 2, axis=1) % 2)
    assert (task.num_classes, task.vocab_size, task.seq_len, task.per_token) == (2, 3, 30, True)
    no_identity = small_task(group="S4", include_identity=False)
    for split in no_identity.splits.values():
        real = np.arange(12)[None, :] < split["lengths"][:, None]
        assert np.all(split["inputs"][real] >= 2) and np.all(split["inputs"][~real] == 0)
    assert set(small_task(group="S4").splits["test"]["inputs"].ravel()) == set(range(25))


def test_splits_lengths_and_padding():
    task = small_task()
    assert (task.num_classes, task.vocab_size, task.seq_len, task.feature_dim) == (6, 7, 12, None)
    for split, size in (("train", 40), ("validation", 10), ("test", 21)):
        arrays = task.splits[split]
        for key in ("inputs", "targets"):
            assert arrays[key].shape == (size, 12) and arrays[key].dtype == np.int32
        assert arrays["lengths"].shape == (size,) and arrays["lengths"].dtype == np.int32
        real = np.arange(12)[None, :] < arrays["lengths"][:, None]
        assert np.all(arrays["targets"][~real] == -1) and np.all(arrays["inputs"][~real] == 0)
        assert np.all(arrays["targets"][real] >= 0) and np.all(arrays["inputs"][real] >= 1)
    assert np.all(task.splits["train"]["lengths"] == 6) and np.all(task.splits["validation"]["lengths"] == 6)
    np.testing.assert_array_equal(task.splits["test"]["lengths"], np.repeat([6, 9, 12], 7))
    variable = small_task(min_train_length=2, num_train=300)
    lengths = variable.splits["train"]["lengths"]
    assert lengths.min() == 2 and lengths.max() == 6 and variable.seq_len == 12
    assert small_task(train_length=20).seq_len == 20


def test_seeding_and_disjoint_streams():
    first, again, other = small_task(), small_task(), small_task(seed=4)
    for split in ("train", "validation", "test"):
        for key in ("inputs", "targets", "lengths"):
            np.testing.assert_array_equal(first.splits[split][key], again.splits[split][key])
        assert not np.array_equal(first.splits[split]["inputs"], other.splits[split]["inputs"])
    train, test = first.splits["train"]["inputs"], first.splits["test"]["inputs"]
    assert not np.array_equal(train[:7], test[:7])
    assert not np.array_equal(first.splits["validation"]["inputs"], train[:10])
    # A test bucket depends only on (seed, its length), not on the other test lengths.
    fewer = small_task(test_lengths=(9,))
    np.testing.assert_array_equal(fewer.splits["test"]["inputs"][:, :9], test[7:14, :9])


def test_training_stream_resumes_through_the_iterator():
    train = small_task(num_train=64).splits["train"]
    iterator = ArrayIterator(train, batch_size=8, seed=5)
    for _ in range(11):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator) for _ in range(6)]
    resumed = ArrayIterator(train, batch_size=8, seed=5)
    resumed.set_state(state)
    for batch, again in zip(expected, (next(resumed) for _ in range(6))):
        for key in batch:
            np.testing.assert_array_equal(batch[key], again[key])


def test_accuracy_by_length_on_a_hand_made_example():
    targets = np.array([[0, 1, -1, -1], [2, 0, -1, -1], [1, 1, 2, 0], [0, 0, 0, 1]])
    lengths = np.array([2, 2, 4, 4])
    predictions = np.array([[0, 1, 5, 5],    # all right
                            [2, 1, 0, 0],    # first right, final wrong (padding ignored)
                            [1, 0, 0, 0],    # 2 of 4 right, final right
                            [0, 0, 0, 0]])   # 3 of 4 right, final wrong
    result = accuracy_by_length(predictions, targets, lengths, buckets=(2, 4))
    assert result[2] == {"token_accuracy": 3 / 4, "final_accuracy": 1 / 2, "num_sequences": 2}
    assert result[4] == {"token_accuracy": 5 / 8, "final_accuracy": 1 / 2, "num_sequences": 2}
    logits = np.eye(6)[predictions]
    assert accuracy_by_length(logits, targets, lengths) == result  # logits; buckets = the lengths present
    coarse = accuracy_by_length(predictions, targets, lengths, buckets=(1, 3, 8))
    assert coarse[3] == result[2] and coarse[8] == result[4] and coarse[1]["num_sequences"] == 0
    assert math.isnan(coarse[1]["token_accuracy"]) and math.isnan(coarse[1]["final_accuracy"])
    flat = flatten_by_length(result)
    assert flat["token_accuracy_len4"] == 5 / 8 and flat["final_accuracy_len2"] == 1 / 2
    with pytest.raises(ValueError, match="buckets"):
        accuracy_by_length(predictions, targets, lengths, buckets=(2,))
    with pytest.raises(ValueError, match="buckets"):
        accuracy_by_length(predictions, targets, lengths, buckets=(4, 2))
    with pytest.raises(ValueError, match="predictions"):
        accuracy_by_length(predictions[:, :3], targets, lengths)


def test_accuracy_by_length_on_a_task_with_exact_answers():
    test = small_task().splits["test"]
    perfect = accuracy_by_length(test["targets"], test["targets"], test["lengths"], buckets=(6, 9, 12))
    assert all(m["token_accuracy"] == m["final_accuracy"] == 1.0 and m["num_sequences"] == 7
               for m in perfect.values())


@pytest.mark.parametrize("options, option", [
    (dict(group="S6"), "group"),
    (dict(group="s3"), "group"),
    (dict(train_length=0), "train_length"),
    (dict(min_train_length=0), "min_train_length"),
    (dict(min_train_length=7), "min_train_length"),
    (dict(test_lengths=(12, 9)), "test_lengths"),
    (dict(test_lengths=(9, 9)), "test_lengths"),
    (dict(test_lengths=()), "test_lengths"),
    (dict(test_lengths=(0, 4)), "test_lengths"),
    (dict(test_lengths=16), "test_lengths"),
    (dict(num_train=-1), "num_train"),
    (dict(num_test_per_length=-2), "num_test_per_length"),
    (dict(include_identity="no"), "include_identity"),
])
def test_bad_options_name_the_option(options, option):
    with pytest.raises(ValueError, match=option):
        small_task(**options)


def test_unknown_group_is_refused_by_get_group():
    with pytest.raises(ValueError, match="group must be one of"):
        get_group("Q8")

"""MQAR generation: every target is the value paired with the queried key, nothing else is a target."""

import numpy as np
import pytest

from jaxattn.data import load_task
from jaxattn.data.recall import generate_recall


@pytest.mark.parametrize("num_keys", [16, 4])
def test_targets_are_the_paired_values(num_keys):
    data = generate_recall(50, rng=np.random.default_rng(0), num_keys=num_keys, num_values=10, num_pairs=4,
                           seq_len=24, num_queries=5)
    for inputs, targets in zip(data["inputs"], data["targets"]):
        pairs = dict(zip(inputs[0:8:2].tolist(), inputs[1:8:2].tolist()))
        assert len(pairs) == 4, "keys are distinct within a sequence"
        assert all(1 <= key <= num_keys for key in pairs) and all(num_keys < v <= num_keys + 10 for v in pairs.values())
        asked = np.flatnonzero(targets >= 0)
        assert np.all(asked >= 8) and np.all(targets[:8] == -1)
        for position in asked:
            assert targets[position] == pairs[inputs[position]]
        expected_count = 5 if num_keys > 4 else 16
        assert asked.size == expected_count
        if num_keys > 4:
            unasked = [t for p, t in enumerate(inputs[8:], 8) if p not in asked]
            assert not set(unasked) & set(pairs), "distractors are never paired keys"


def test_task_is_deterministic_and_sized():
    first = load_task("recall", num_train=30, num_validation=5, num_test=5, seq_len=32)
    second = load_task("recall", num_train=30, num_validation=5, num_test=5, seq_len=32)
    assert first.per_token and first.vocab_size == 1 + 64 + 64
    np.testing.assert_array_equal(first.splits["train"]["inputs"], second.splits["train"]["inputs"])
    assert first.splits["train"]["targets"].shape == (30, 32)
    assert not np.array_equal(first.splits["train"]["inputs"], first.splits["test"]["inputs"][:5].repeat(6, 0))


def test_bad_options():
    with pytest.raises(ValueError, match="num_queries"):
        load_task("recall", num_train=2, num_validation=1, num_test=1, seq_len=16, num_pairs=8, num_queries=1)
    with pytest.raises(ValueError, match="num_pairs=8 needs at least"):
        load_task("recall", num_train=2, num_validation=1, num_test=1, num_keys=4)

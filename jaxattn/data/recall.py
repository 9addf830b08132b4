"""Multi-query associative recall (MQAR; Arora et al. 2023, Zoology): what can a fixed-size state remember?

A sequence lists ``num_pairs`` key-value pairs, then asks for keys again: every occurrence of a
key in the query part must be answered with the value it was paired with.

    inputs : k1 v1 k2 v2 ... kP vP | q1 x q2 x ... (then padding 0)
    targets: -1 everywhere except at each query position, where it is the query's value

Keys are token ids ``1..num_keys``, values ``num_keys+1..num_keys+num_values`` (distinct keys
within a sequence; 0 is padding). Queries are placed at random positions of the query part (the
other positions hold random keys that were never paired, as distractors), so a model must look
up, not count. The targets are per position: ``targets [N, L]``, ``lengths [N]`` all ``L``.

See docs/tasks.md#recall.
"""

import numpy as np

from jaxattn.data.tasks import SPLIT_NAMES, TaskSpec, register_task


def generate_recall(
    num_examples: int, *, rng: np.random.Generator, num_keys: int, num_values: int, num_pairs: int,
    seq_len: int, num_queries: int,
) -> dict[str, np.ndarray]:
    """``{"inputs": [N, L], "targets": [N, L], "lengths": [N]}`` int32 (see the module docstring)."""
    query_part = seq_len - 2 * num_pairs
    if num_pairs > num_keys:
        raise ValueError(f"num_pairs={num_pairs} needs at least as many keys, got num_keys={num_keys}")
    if not 1 <= num_queries <= query_part:
        raise ValueError(
            f"num_queries={num_queries} must be in [1, seq_len - 2 num_pairs = {query_part}]"
        )
    inputs = np.zeros((num_examples, seq_len), np.int32)
    targets = np.full((num_examples, seq_len), -1, np.int32)
    for row in range(num_examples):
        keys = rng.choice(num_keys, size=num_keys, replace=False) + 1
        paired, distractors = keys[:num_pairs], keys[num_pairs:]
        values = rng.integers(0, num_values, num_pairs) + num_keys + 1
        inputs[row, 0 : 2 * num_pairs : 2] = paired
        inputs[row, 1 : 2 * num_pairs : 2] = values
        query_part_tokens = (
            rng.choice(distractors, size=query_part) if distractors.size else rng.choice(paired, size=query_part)
        )
        asked = rng.integers(0, num_pairs, num_queries)
        positions = 2 * num_pairs + rng.choice(query_part, size=num_queries, replace=False)
        query_part_tokens[positions - 2 * num_pairs] = paired[asked]
        inputs[row, 2 * num_pairs :] = query_part_tokens
        targets[row, positions] = values[asked]
    if num_keys == num_pairs:
        # Without spare keys the filler repeats paired keys: those positions are answerable too.
        filler = inputs[:, 2 * num_pairs :]
        lookup = np.zeros((num_examples, num_keys + 1), np.int32)
        np.put_along_axis(lookup, inputs[:, 0 : 2 * num_pairs : 2], inputs[:, 1 : 2 * num_pairs : 2], axis=1)
        targets[:, 2 * num_pairs :] = np.take_along_axis(lookup, filler, axis=1)
    return {"inputs": inputs, "targets": targets, "lengths": np.full(num_examples, seq_len, np.int32)}


@register_task("recall")
def build_recall_task(
    *, num_train: int = 20_000, num_validation: int = 1_000, num_test: int = 1_000, num_keys: int = 64,
    num_values: int = 64, num_pairs: int = 8, seq_len: int = 64, num_queries: int = 8, seed: int = 0,
) -> TaskSpec:
    """MQAR; split i of (train, validation, test) uses ``default_rng((seed, i))``."""
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    splits = {
        split: generate_recall(
            sizes[split], rng=np.random.default_rng((seed, index)), num_keys=num_keys, num_values=num_values,
            num_pairs=num_pairs, seq_len=seq_len, num_queries=num_queries,
        )
        for index, split in enumerate(SPLIT_NAMES)
    }
    vocab_size = 1 + num_keys + num_values
    return TaskSpec(name="recall", num_classes=vocab_size, seq_len=seq_len, vocab_size=vocab_size,
                    feature_dim=None, splits=splits)

"""Parity of a bit string: a state-tracking probe.

Solving it requires carrying one bit of state across the whole (variable-length) sequence, which
attention without positional/recurrent help is known to struggle with.

See docs/tasks.md#parity.
"""

from __future__ import annotations

import numpy as np

from jaxattn.data.tasks import SPLIT_NAMES, TaskSpec, register_task

BIT_ZERO_TOKEN = 1
BIT_ONE_TOKEN = 2
VOCAB_SIZE = 3  # 0 = padding, 1 = bit 0, 2 = bit 1
NUM_CLASSES = 2


def generate_parity(num_examples: int, *, min_length: int, max_length: int, rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
    """Draws random bit strings with uniformly random lengths.

    Returns:
      "inputs" int32 [num_examples, max_length] (tokens 1/2, zeros after the length),
      "targets" int32 [num_examples] (XOR of the bits), "lengths" int32 [num_examples] in
      [min_length, max_length].
    """
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    bits = rng.integers(0, 2, size=(num_examples, max_length))
    is_real = np.arange(max_length)[None, :] < lengths[:, None]
    bits = bits * is_real
    return {
        "inputs": ((bits + BIT_ZERO_TOKEN) * is_real).astype(np.int32),
        "targets": (bits.sum(axis=1) % 2).astype(np.int32),
        "lengths": lengths.astype(np.int32),
    }


@register_task("parity")
def build_parity_task(*, num_train: int = 20_000, num_validation: int = 1_000, num_test: int = 1_000,
                      min_length: int = 16, max_length: int = 64, seed: int = 0) -> TaskSpec:
    """Builds the parity task; each split uses its own generator `default_rng((seed, split_number))`."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got min_length={min_length}, "
                         f"max_length={max_length}")
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    for split, size in sizes.items():
        if size < 0:
            raise ValueError(f"num_{split} must be >= 0, got {size}")
    splits = {
        split: generate_parity(sizes[split], min_length=min_length, max_length=max_length,
                               rng=np.random.default_rng((seed, split_number)))
        for split_number, split in enumerate(SPLIT_NAMES)
    }
    return TaskSpec(name="parity", num_classes=NUM_CLASSES, seq_len=max_length, vocab_size=VOCAB_SIZE,
                    feature_dim=None, splits=splits)

"""Triple sums mod M ("Match3", Sanford, Hsu & Telgarsky 2023): a probe of triple-wise correlation.

Position i of a sequence ``x`` of integers mod M is labelled 1 when some pair of positions
``(j, k)`` (any two, equal or not, i included) completes it to zero:

    ``y_i = [exists j, k: x_i + x_j + x_k = 0 (mod M)]``.

One softmax attention layer needs a width growing polynomially in the length to represent this
(the pair must be found jointly), while one 2-simplicial layer attends to pairs directly: its
logit for ``(j, k)`` can single out ``x_j + x_k = -x_i``. Tokens are ``x + 1`` (0 is padding); the
targets are per position, ``[N, L]`` with values 0/1. ``modulus`` sets the positive rate: with L
tokens there are ``L (L + 1) / 2`` pair sums, so about ``1 - exp(-L (L + 1) / (2 M))`` positions are
positive (``L = 16``, ``M = 192``: about half).

See docs/tasks.md#triple_sum.
"""

import numpy as np

from jaxattn.data.tasks import SPLIT_NAMES, TaskSpec, register_task


def triple_sum_labels(values: np.ndarray, modulus: int) -> np.ndarray:
    """``values [N, L]`` in ``[0, M)`` -> ``[N, L]`` int32: 1 where some ``x_j + x_k = -x_i (mod M)``."""
    pair_sums = (values[:, :, None] + values[:, None, :]) % modulus  # [N, L, L]
    reachable = np.zeros((values.shape[0], modulus), bool)
    rows = np.repeat(np.arange(values.shape[0]), pair_sums[0].size)
    reachable[rows, pair_sums.reshape(-1)] = True
    return np.take_along_axis(reachable, (-values) % modulus, axis=1).astype(np.int32)


def generate_triple_sums(num_examples: int, *, rng: np.random.Generator, seq_len: int, modulus: int
                         ) -> dict[str, np.ndarray]:
    """``{"inputs": [N, L] (x + 1), "targets": [N, L] (0/1), "lengths": [N] (all L)}`` int32."""
    if seq_len < 1 or modulus < 2:
        raise ValueError(f"triple_sum needs seq_len >= 1 and modulus >= 2, got {seq_len}, {modulus}")
    values = rng.integers(0, modulus, size=(num_examples, seq_len))
    return {
        "inputs": (values + 1).astype(np.int32),
        "targets": triple_sum_labels(values, modulus),
        "lengths": np.full(num_examples, seq_len, np.int32),
    }


@register_task("triple_sum")
def build_triple_sum_task(*, num_train: int = 20_000, num_validation: int = 1_000, num_test: int = 1_000,
                          seq_len: int = 16, modulus: int = 192, seed: int = 0) -> TaskSpec:
    """Triple sums; split i of (train, validation, test) uses ``default_rng((seed, i))``."""
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    splits = {
        split: generate_triple_sums(sizes[split], rng=np.random.default_rng((seed, index)), seq_len=seq_len,
                                    modulus=modulus)
        for index, split in enumerate(SPLIT_NAMES)
    }
    return TaskSpec(name="triple_sum", num_classes=2, seq_len=seq_len, vocab_size=modulus + 1, feature_dim=None,
                    splits=splits)

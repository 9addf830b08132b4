"""Word problems on finite groups: track the running product of a word of group elements.

The state-tracking benchmark of Merrill et al. (2024, "The Illusion of State in State-Space
Models"), Grazzi et al. (2024, "Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues") and Siems et al. (2025, "DeltaProduct"): a model reads a word ``x_1 .. x_T`` of
elements of a group G and must output, at every position t, the running product

    p_t = x_1 · x_2 · ... · x_t = p_{t-1} · x_t,        p_0 = e (the identity).

Groups (``GROUP_NAMES``): the cyclic groups Z2 (parity), Z3, Z5 and the permutation groups S3, S4,
A5 (the even permutations of 5 points, the smallest non-solvable group) and S5. Their orders are
2, 3, 5, 6, 24, 60 and 120.

Every group is a group of permutations of ``{0, ..., n-1}``, and there is one product for all:
an element σ is the tuple ``(σ(0), ..., σ(n-1))`` and

    (σ · τ)(i) = σ(τ(i)),        i.e. σ · τ = σ ∘ τ (τ acts first),

so ``p_t(i) = x_1(x_2(... x_t(i) ...))``. Zn is the group of cyclic shifts ``k: i -> (i + k) mod n``,
for which ``k · m = (k + m) mod n`` and ``p_t = (x_1 + ... + x_t) mod n``.

Elements are enumerated once: Zn by the shift k (index k); Sn in the lexicographic order of
``itertools.permutations(range(n))``; A5 as the even ones among S5's, in the same order. The
identity is index 0 in every group. `get_group` returns the elements with their multiplication
table ``table[a, b] = index(elements[a] · elements[b])`` (numpy, computed once per group).

Data contract (as the other token-level tasks, ``targets [N, L]`` with -1 = no target):

    inputs [N, L]  : token = element index + 1 for t < length, 0 (padding) after
    targets [N, L] : index of p_t for t < length, -1 after;  num_classes = |G|, vocab_size = |G| + 1
    lengths [N]    : real positions

Letters are drawn uniformly from G (or from G without the identity, ``include_identity=False``).
Splits: "train" has sequences of ``train_length`` (or lengths uniform in
``[min_train_length, train_length]``); "validation" is drawn exactly like train (an
in-distribution check, what the training loop evaluates periodically); "test" holds
``num_test_per_length`` sequences of each length in ``test_lengths`` (length generalisation),
grouped by length in increasing order. All splits are padded to
``seq_len = max(train_length, max(test_lengths))``. Generators: train ``default_rng((seed, 0))``,
validation ``default_rng((seed, 1))``, the test sequences of length L ``default_rng((seed, 2, L))``
(so a test bucket does not change when other test lengths are added).

Evaluation by length: `accuracy_by_length` takes the argmax predictions (or the logits) of a
split and reports, for each length bucket, the token accuracy over all real positions and the
accuracy of the final state p_length. The training loop reports one accuracy over all scored
positions; an experiment gets per-length numbers from the test split's predictions::

    test = task.splits["test"]
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    predictions = np.concatenate([
        np.asarray(model.apply(variables, batch["inputs"], batch["lengths"], train=False).argmax(-1))
        for batch in eval_batches(test, batch_size=256)])[: len(test["lengths"])]
    by_length = accuracy_by_length(predictions, test["targets"], test["lengths"])
    writer.write(step, "test_by_length", flatten_by_length(by_length))

The model must be causal and per position: ``config.model.pooling = "none"`` with a causal
mixer (``num_classes = |G|`` outputs), or ``config.model.kind = "language_model"`` (whose
``|G| + 1`` outputs include every class).

See docs/tasks.md#word_problem.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from jaxattn.data.tasks import TaskSpec, register_task

GROUP_NAMES = ("Z2", "Z3", "Z5", "S3", "S4", "A5", "S5")
IDENTITY = 0  # index of the identity in every group


@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """A finite group as permutations, with its multiplication table (arrays are read-only).

    Attributes:
      name: one of `GROUP_NAMES`.
      elements: int64 ``[G, n]``; ``elements[k]`` is the permutation ``(σ(0), ..., σ(n-1))``.
      table: int32 ``[G, G]``; ``table[a, b]`` is the index of ``elements[a] · elements[b]``
        (``(σ · τ)(i) = σ(τ(i))``).
      inverse: int32 ``[G]``; ``table[a, inverse[a]] == table[inverse[a], a] == IDENTITY``.
    """

    name: str
    elements: np.ndarray
    table: np.ndarray
    inverse: np.ndarray

    @property
    def order(self) -> int:
        return int(self.elements.shape[0])

    def running_product(self, word: np.ndarray) -> np.ndarray:
        """Indices of ``p_t = word[..., 0] · ... · word[..., t]`` for every t: ``[..., T] -> [..., T]`` int32."""
        word = np.asarray(word)
        products = np.empty(word.shape, np.int32)
        state = np.full(word.shape[:-1], IDENTITY, np.int32)
        for t in range(word.shape[-1]):
            state = self.table[state, word[..., t]]
            products[..., t] = state
        return products


def _is_even(permutation: Sequence[int]) -> bool:
    inversions = sum(a > b for a, b in itertools.combinations(permutation, 2))
    return inversions % 2 == 0


def _enumerate_elements(name: str) -> np.ndarray:
    kind, n = name[0], int(name[1:])
    if kind == "Z":
        return np.array([[(i + k) % n for i in range(n)] for k in range(n)], np.int64)
    permutations = list(itertools.permutations(range(n)))
    if kind == "A":
        permutations = [p for p in permutations if _is_even(p)]
    return np.array(permutations, np.int64)


def _check_group_name(group: str) -> None:
    if not isinstance(group, str) or group not in GROUP_NAMES:
        raise ValueError(f"group must be one of {list(GROUP_NAMES)}, got {group!r}")


@functools.lru_cache(maxsize=None)
def get_group(name: str) -> Group:
    """The group `name` (one of `GROUP_NAMES`), built once and cached."""
    _check_group_name(name)
    elements = _enumerate_elements(name)
    order, degree = elements.shape
    # composed[a, b, i] = elements[a][elements[b][i]]: the one composition rule of the module.
    composed = elements[np.arange(order)[:, None, None], elements[None, :, :]]
    place_values = degree ** np.arange(degree - 1, -1, -1, dtype=np.int64)
    keys = elements @ place_values
    sorted_rows = np.argsort(keys)
    composed_keys = composed @ place_values
    positions = np.clip(np.searchsorted(keys[sorted_rows], composed_keys), 0, order - 1)
    table = sorted_rows[positions].astype(np.int32)
    if not np.array_equal(keys[table], composed_keys):
        raise AssertionError(f"the elements enumerated for {name} are not closed under composition")
    is_identity = table == IDENTITY
    inverse = np.argmax(is_identity, axis=1).astype(np.int32)
    if not np.array_equal(elements[IDENTITY], np.arange(degree)) or not is_identity.any(axis=1).all():
        raise AssertionError(f"the elements enumerated for {name} lack the identity at {IDENTITY} or inverses")
    for array in (elements, table, inverse):
        array.flags.writeable = False
    return Group(name=name, elements=elements, table=table, inverse=inverse)


def generate_word_problem(lengths: np.ndarray, *, group: str, seq_len: int, rng: np.random.Generator,
                          include_identity: bool = True) -> dict[str, np.ndarray]:
    """One row per entry of ``lengths``: a uniformly random word and its running products.

    The letters are drawn as a ``[N, max(lengths)]`` block from ``rng``, so the rows depend on
    ``lengths`` and ``rng`` only, not on the padding width ``seq_len``.

    Returns:
      "inputs" int32 ``[N, seq_len]`` (element index + 1, 0 after the length), "targets" int32
      ``[N, seq_len]`` (index of ``p_t``, -1 after the length), "lengths" int32 ``[N]``.
    """
    group_ = get_group(group)
    lengths = np.asarray(lengths, np.int64)
    if lengths.ndim != 1 or (lengths.size and not (lengths.min() >= 1 and lengths.max() <= seq_len)):
        raise ValueError(f"lengths must be a 1-D array of values in [1, seq_len={seq_len}]")
    low = IDENTITY + 1 if not include_identity else IDENTITY
    # Drawn only as wide as the longest row, so the rows do not depend on the padding width seq_len.
    drawn = rng.integers(low, group_.order, size=(lengths.size, int(lengths.max(initial=0))))
    word = np.pad(drawn, ((0, 0), (0, seq_len - drawn.shape[1])))
    is_real = np.arange(seq_len)[None, :] < lengths[:, None]
    return {
        "inputs": np.where(is_real, word + 1, 0).astype(np.int32),
        "targets": np.where(is_real, group_.running_product(word), -1).astype(np.int32),
        "lengths": lengths.astype(np.int32),
    }


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_lengths(name: str, lengths) -> tuple[int, ...]:
    """A non-empty, strictly increasing sequence of ints >= 1, as a tuple."""
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a sequence of ints >= 1, got {lengths!r}")
    values = list(lengths.tolist() if isinstance(lengths, np.ndarray) else lengths)
    if not values or not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {lengths!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be sorted in strictly increasing order, got {lengths!r}")
    return tuple(int(v) for v in values)


@register_task("word_problem")
def build_word_problem_task(
    *, group: str = "S3", train_length: int = 16, min_train_length: int | None = None,
    test_lengths: Sequence[int] = (16, 32, 64, 128), num_train: int = 20_000, num_validation: int = 1_000,
    num_test_per_length: int = 500, include_identity: bool = True, seed: int = 0,
) -> TaskSpec:
    """Word problem on ``group`` (see the module docstring for the splits and their generators).

    Args:
      group: one of `GROUP_NAMES`.
      train_length: length of the train (and validation) sequences, or the largest one.
      min_train_length: None for fixed-length training sequences, else lengths are uniform in
        ``[min_train_length, train_length]``.
      test_lengths: strictly increasing lengths; the test split has ``num_test_per_length`` of each.
      num_train, num_validation, num_test_per_length: split sizes (>= 0).
      include_identity: whether the letters may be the identity (False: uniform over G minus e).
      seed: seeds every split's generator.
    """
    _check_group_name(group)
    _check_int("train_length", train_length, 1)
    if min_train_length is not None:
        _check_int("min_train_length", min_train_length, 1)
        if min_train_length > train_length:
            raise ValueError(f"min_train_length ({min_train_length}) must be <= train_length ({train_length})")
    test_lengths = _check_lengths("test_lengths", test_lengths)
    for name, size in (("num_train", num_train), ("num_validation", num_validation),
                       ("num_test_per_length", num_test_per_length)):
        _check_int(name, size, 0)
    _check_int("seed", seed, 0)
    if not isinstance(include_identity, (bool, np.bool_)):
        raise ValueError(f"include_identity must be a bool, got {include_identity!r}")
    seq_len = max(train_length, test_lengths[-1])

    def in_distribution(size: int, split_number: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((seed, split_number))
        if min_train_length is None:
            lengths = np.full(size, train_length)
        else:
            lengths = rng.integers(min_train_length, train_length + 1, size=size)
        return generate_word_problem(lengths, group=group, seq_len=seq_len, rng=rng,
                                     include_identity=include_identity)

    buckets = [generate_word_problem(np.full(num_test_per_length, length), group=group, seq_len=seq_len,
                                     rng=np.random.default_rng((seed, 2, length)),
                                     include_identity=include_identity)
               for length in test_lengths]
    splits = {
        "train": in_distribution(num_train, 0),
        "validation": in_distribution(num_validation, 1),
        "test": {key: np.concatenate([bucket[key] for bucket in buckets]) for key in buckets[0]},
    }
    order = get_group(group).order
    return TaskSpec(name="word_problem", num_classes=order, seq_len=seq_len, vocab_size=order + 1,
                    feature_dim=None, splits=splits)


def accuracy_by_length(predictions, targets, lengths, buckets: Sequence[int] | None = None
                       ) -> dict[int, dict[str, float]]:
    """Accuracy per sequence-length bucket (numpy; accepts numpy or JAX arrays).

    Args:
      predictions: int ``[N, L]`` predicted classes, or logits ``[N, L, C]`` (argmax taken).
      targets: int ``[N, L]``, -1 = no target (e.g. padding).
      lengths: int ``[N]`` real positions per row.
      buckets: strictly increasing lengths; a row of length l falls in the first bucket b >= l
        (in the test split every row's length is one of the test lengths, so each bucket holds
        exactly the sequences of that length). None: one bucket per distinct value of ``lengths``.

    Returns:
      bucket -> {"token_accuracy": fraction of correct predictions over every position t < length
      with a target, "final_accuracy": fraction of rows whose prediction at position length - 1
      is correct (the last state), "num_sequences": rows in the bucket}; accuracies are NaN for an
      empty bucket.

    Raises:
      ValueError: on mismatched shapes, bad ``buckets``, or a length beyond the last bucket.
    """
    predictions, targets, lengths = np.asarray(predictions), np.asarray(targets), np.asarray(lengths)
    if targets.ndim != 2:
        raise ValueError(f"targets must be [N, L] (per position), got shape {targets.shape}")
    if predictions.ndim == 3:
        predictions = predictions.argmax(-1)
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {predictions.shape} (or logits without their last axis) must match "
                         f"targets {targets.shape}")
    if lengths.shape != targets.shape[:1]:
        raise ValueError(f"lengths must be [N] = {targets.shape[:1]}, got {lengths.shape}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > targets.shape[1]):
        raise ValueError(f"lengths must lie in [1, L={targets.shape[1]}]")
    if buckets is None:
        buckets = tuple(int(b) for b in np.unique(lengths))
    else:
        buckets = _check_lengths("buckets", buckets)
    if lengths.size and buckets and lengths.max() > buckets[-1]:
        raise ValueError(f"a row has length {int(lengths.max())}, beyond the last of buckets {list(buckets)}")
    bucket_of_row = np.searchsorted(np.asarray(buckets), lengths, side="left")
    scored = (np.arange(targets.shape[1])[None, :] < lengths[:, None]) & (targets >= 0)
    correct = predictions == targets
    rows = np.arange(targets.shape[0])
    final_correct = correct[rows, lengths - 1]
    final_scored = targets[rows, lengths - 1] >= 0

    def fraction(hits: np.ndarray, mask: np.ndarray) -> float:
        return float(hits[mask].mean()) if mask.any() else float("nan")

    result = {}
    for index, bucket in enumerate(buckets):
        in_bucket = bucket_of_row == index
        result[bucket] = {
            "token_accuracy": fraction(correct, scored & in_bucket[:, None]),
            "final_accuracy": fraction(final_correct, final_scored & in_bucket),
            "num_sequences": int(in_bucket.sum()),
        }
    return result


def flatten_by_length(by_length: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """``{16: {"token_accuracy": a, ...}}`` -> ``{"token_accuracy_len16": a, ...}`` (for a metrics writer)."""
    return {f"{key}_len{bucket}": float(value) for bucket, metrics in by_length.items()
            for key, value in metrics.items()}

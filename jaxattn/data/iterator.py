"""Deterministic batching over in-memory arrays.

Two entry points:

* `ArrayIterator` -- the infinite training stream: seeded per-epoch shuffles, process sharding and
  a small JSON-serialisable state so a run can be resumed exactly.
* `eval_batches` -- one ordered pass over every row, padded so every batch has the same shape, with
  a per-row "weight" marking which rows are real.

Both work on a dict of numpy arrays sharing their leading (row) dimension, e.g.
{"inputs": [N, L], "targets": [N], "lengths": [N]}. Batches are dicts with the same keys.

The contract (seeded, sharded, resumable) in words: docs/tasks.md#the-iterators.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

EVAL_WEIGHT_KEY = "weight"


def _num_rows(arrays: Mapping[str, np.ndarray]) -> int:
    """Returns the shared leading size N of `arrays`, raising ValueError if there is none."""
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError(f"arrays must be a non-empty dict of numpy arrays, got {arrays!r}")
    sizes = {}
    for key, value in arrays.items():
        shape = np.shape(value)
        if not shape:
            raise ValueError(f"arrays[{key!r}] must have a leading row dimension, got a scalar")
        sizes[key] = shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays must all have the same leading size, got {sizes}")
    return next(iter(sizes.values()))


def _local_batch_size(batch_size: int, process_index: int, process_count: int) -> int:
    """Validates the sharding arguments and returns the per-process batch size."""
    if isinstance(process_count, bool) or not isinstance(process_count, (int, np.integer)) or process_count < 1:
        raise ValueError(f"process_count must be a positive int, got {process_count!r}")
    if (isinstance(process_index, bool) or not isinstance(process_index, (int, np.integer))
            or not 0 <= process_index < process_count):
        raise ValueError(f"process_index must be an int in [0, {process_count}), got {process_index!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size % process_count:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by process_count ({process_count})")
    return batch_size // process_count


class ArrayIterator:
    """Deterministic, seeded, epoch-shuffled, process-sharded, resumable batches over in-memory arrays.

    Epoch `e` visits the rows in the order `np.random.default_rng((seed, e)).permutation(N)` (or
    0..N-1 when `shuffle=False`), cut into `N // batch_size` global batches; the incomplete tail is
    dropped so every step sees the same shape. Every process computes the same global batch and keeps
    rows `[process_index * local, (process_index + 1) * local)` of it, where
    `local = batch_size // process_count`. Because the order depends only on (seed, epoch), the state
    is just a position, and it does not depend on the process layout.

    Args:
      arrays: name -> array with leading size N (rows). Not copied; do not mutate while iterating.
      batch_size: GLOBAL batch size, 1 <= batch_size <= N, divisible by `process_count`.
      seed: non-negative int seeding the per-epoch permutations.
      shuffle: if False, every epoch visits rows in their stored order.
      process_index: this process's index in [0, process_count).
      process_count: number of processes sharing each global batch.

    Yields:
      dict name -> array of shape [batch_size // process_count, ...] (the local batch).
    """

    def __init__(self, arrays: dict[str, np.ndarray], *, batch_size: int, seed: int, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1):
        num_rows = _num_rows(arrays)
        self._local_batch_size = _local_batch_size(batch_size, process_index, process_count)
        if num_rows == 0:
            raise ValueError("arrays must contain at least one row for training")
        if batch_size > num_rows:
            raise ValueError(f"batch_size ({batch_size}) must not exceed the number of examples ({num_rows}) "
                             "because incomplete batches are dropped")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self._arrays = {key: np.asarray(value) for key, value in arrays.items()}
        self._num_examples = int(num_rows)
        self._batch_size = int(batch_size)
        self._seed = int(seed)
        self._shuffle = bool(shuffle)
        self._process_index = int(process_index)
        self._epoch = 0
        self._batch_in_epoch = 0
        self._cached_order: tuple[int, np.ndarray] | None = None  # (epoch, row order) of the last epoch used

    @property
    def steps_per_epoch(self) -> int:
        """Number of (full) global batches per epoch."""
        return self._num_examples // self._batch_size

    @property
    def num_examples(self) -> int:
        """Number of rows N in the underlying arrays."""
        return self._num_examples

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Row indices [N] in the order epoch `epoch` visits them."""
        if self._cached_order is None or self._cached_order[0] != epoch:
            if self._shuffle:
                order = np.random.default_rng((self._seed, epoch)).permutation(self._num_examples)
            else:
                order = np.arange(self._num_examples)
            self._cached_order = (epoch, order)
        return self._cached_order[1]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        global_start = self._batch_in_epoch * self._batch_size
        local_start = global_start + self._process_index * self._local_batch_size
        rows = self._epoch_order(self._epoch)[local_start:local_start + self._local_batch_size]
        batch = {key: value[rows] for key, value in self._arrays.items()}
        # Advance eagerly so a saved state always points at the batch that comes next.
        self._batch_in_epoch += 1
        if self._batch_in_epoch == self.steps_per_epoch:
            self._epoch += 1
            self._batch_in_epoch = 0
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position of the stream (independent of the process layout)."""
        return {
            "epoch": self._epoch,
            "batch_in_epoch": self._batch_in_epoch,
            "seed": self._seed,
            "shuffle": self._shuffle,
            "batch_size": self._batch_size,
            "num_examples": self._num_examples,
        }

    def set_state(self, state: dict) -> None:
        """Moves to the position saved by `get_state`; the following batches match the saved iterator's.

        Raises ValueError if the state was saved by an iterator configured differently (seed, shuffle,
        batch_size or number of examples), since its positions would then mean different batches.
        """
        for key in ("seed", "shuffle", "batch_size", "num_examples"):
            if key in state and state[key] != self.get_state()[key]:
                raise ValueError(f"state[{key!r}] = {state[key]!r} does not match this iterator's "
                                 f"{key} = {self.get_state()[key]!r}")
        epoch, batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"state['epoch'] must be a non-negative int, got {epoch!r}")
        if not isinstance(batch_in_epoch, int) or not 0 <= batch_in_epoch < self.steps_per_epoch:
            raise ValueError(f"state['batch_in_epoch'] must be an int in [0, {self.steps_per_epoch}), "
                             f"got {batch_in_epoch!r}")
        self._epoch = epoch
        self._batch_in_epoch = batch_in_epoch


def eval_batches(arrays: dict[str, np.ndarray], *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Yields every row exactly once, in order, in global batches of `batch_size`.

    The last global batch is padded to full size by repeating row 0, so every batch has the same
    shape (one compiled eval step). Each process keeps its slice of the global batch, as in
    `ArrayIterator`.

    Args:
      arrays: name -> array with leading size N. Must not contain the key "weight".
      batch_size: GLOBAL batch size, divisible by `process_count`; may exceed N.
      process_index: this process's index in [0, process_count).
      process_count: number of processes sharing each global batch.

    Yields:
      ceil(N / batch_size) dicts name -> [batch_size // process_count, ...] plus "weight" float32
      [batch_size // process_count]: 1.0 for real rows, 0.0 for padding.
    """
    num_rows = _num_rows(arrays)
    local_batch_size = _local_batch_size(batch_size, process_index, process_count)
    if EVAL_WEIGHT_KEY in arrays:
        raise ValueError(f"arrays must not contain the key {EVAL_WEIGHT_KEY!r}; eval_batches adds it")
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    # Validation above runs at call time; only the batching below is lazy.
    return _padded_batches(arrays, num_rows, batch_size, process_index, local_batch_size)


def _padded_batches(arrays: dict[str, np.ndarray], num_rows: int, batch_size: int, process_index: int,
                    local_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Generator behind `eval_batches` (arguments already validated)."""
    for global_start in range(0, num_rows, batch_size):
        local_start = global_start + process_index * local_batch_size
        positions = np.arange(local_start, local_start + local_batch_size)
        is_real = positions < num_rows
        rows = np.where(is_real, positions, 0)
        batch = {key: value[rows] for key, value in arrays.items()}
        batch[EVAL_WEIGHT_KEY] = is_real.astype(np.float32)
        yield batch

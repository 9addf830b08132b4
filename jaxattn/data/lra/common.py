"""Shared pieces of the LRA loaders: finding release files, input dtypes, byte tokens, TSV rows, splits,
progress.

Token conventions shared by every LRA task here: 0 is padding and real tokens are >= 1, so byte
``b`` becomes token ``b + 1`` (ids 1..256, as LRA's byte encoder) and a pixel intensity ``v``
becomes token ``v + 1``.

The LRA tasks and where their data come from: docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from jaxattn.data.tasks import TaskSpec

LRA_RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
LRA_RELEASE_SOURCE = (f"the LRA release {LRA_RELEASE_URL} (see github.com/google-research/long-range-arena; "
                      "unpack it with `tar -xzf lra_release.gz`)")
BYTE_VOCAB_SIZE = 257  # padding 0 + 256 byte values
TOKEN_DTYPES = ("int32", "uint16")
FEATURE_DTYPES = ("float32", "float16")


def require_data_dir(data_dir: str | os.PathLike | None, task: str, source: str) -> str:
    """`data_dir` as a string; ValueError naming the task and where its data comes from when it is None."""
    if data_dir is None:
        raise ValueError(f"{task} reads a released data set: pass data_dir=<directory holding {source}>")
    return os.fspath(data_dir)


def find_release_path(data_dir: str, relative: str, *, subdir: str, source: str) -> str:
    """Path of a release file or folder, given either the release root or the task's own folder.

    Looks for ``data_dir/subdir/relative`` then ``data_dir/relative`` (so ``data_dir`` may be the
    unpacked archive root or the task folder inside it).

    Raises:
      FileNotFoundError: naming every path tried and where the release comes from.
    """
    candidates = [os.path.join(data_dir, subdir, relative), os.path.join(data_dir, relative)]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"expected {' or '.join(candidates)}; it comes from {source}")


def resolve_input_dtype(name: str | None, *, tokens: bool) -> np.dtype:
    """Storage dtype of the inputs: int32 tokens / float32 features unless a compact one is asked for.

    "uint16" holds every token id here exactly at half the memory of int32 (embedding lookups take
    any integer dtype); "float16" halves feature memory (pixel features keep ~3 significant digits).
    """
    allowed = TOKEN_DTYPES if tokens else FEATURE_DTYPES
    if name is None:
        return np.dtype(allowed[0])
    if name not in allowed:
        raise ValueError(f"input_dtype must be one of {allowed} (or None) for "
                         f"{'token' if tokens else 'feature'} inputs, got {name!r}")
    return np.dtype(name)


def encode_bytes(row: np.ndarray, data: bytes, max_length: int) -> int:
    """Writes byte tokens (byte + 1) of ``data[:max_length]`` to the start of ``row``; returns their count."""
    values = np.frombuffer(data, dtype=np.uint8, count=min(len(data), max_length))
    row[:len(values)] = values
    row[:len(values)] += 1
    return len(values)


def count_lines(path: str, *, chunk_bytes: int = 1 << 24) -> int:
    """Number of newline-terminated lines, plus one for a last line without a newline."""
    count, last = 0, b"\n"
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        raise ValueError(f"{name} must lie in {'[0' if allow_zero else '(0'}, 1), got {value!r}")


def seeded_split(num_rows: int, fractions: dict[str, float], *, seed: int) -> dict[str, np.ndarray]:
    """Disjoint sorted row indices: ``int(fraction * num_rows)`` rows per named split, the rest "train".

    The rows are drawn by ``np.random.default_rng(seed).permutation(num_rows)``, in the order of
    ``fractions``; the split depends only on (num_rows, fractions, seed).
    """
    order = np.random.default_rng(seed).permutation(num_rows)
    rows, start = {}, 0
    for split, fraction in fractions.items():
        size = int(fraction * num_rows)
        rows[split] = np.sort(order[start:start + size])
        start += size
    rows["train"] = np.sort(order[start:])
    return rows


def take_rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[rows] for key, value in arrays.items()}


class Progress:
    """Logs ``done / total`` of a long read at most every `interval_s` seconds (absl logging)."""

    def __init__(self, what: str, total: int, *, interval_s: float = 10.0):
        self._what, self._total, self._interval_s = what, total, interval_s
        self._start = self._last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            logging.info("%s: %d / %d (%.0f s)", self._what, done, self._total, now - self._start)

    def finish(self, done: int) -> None:
        logging.info("%s: %d done in %.1f s", self._what, done, time.monotonic() - self._start)


def read_tsv_rows(path: str, *, seq_len: int, dtype: np.dtype,
                  fill_row: Callable[[np.ndarray, list[bytes]], tuple[int, int]],
                  header: bytes | None = None) -> dict[str, np.ndarray]:
    """Reads a tab-separated file of one example a line into padded token rows.

    ``fill_row(inputs_row, fields)`` writes the tokens of one line's tab-separated ``fields`` into
    its zero ``inputs_row [seq_len]`` and returns ``(target, length)``; a ValueError it raises is
    re-raised naming the file and line. Blank lines are skipped, and ``header``, when given, must be
    the first line.

    Returns:
      "inputs" [N, seq_len] of ``dtype``, "targets" int32 [N], "lengths" int32 [N], N the lines filled.
    """
    num_rows = max(count_lines(path) - (header is not None), 0)
    inputs = np.zeros((num_rows, seq_len), dtype=dtype)
    targets = np.zeros(num_rows, dtype=np.int32)
    lengths = np.zeros(num_rows, dtype=np.int32)
    progress = Progress(f"Reading {path}", num_rows)
    row = 0
    with open(path, "rb") as file:
        if header is not None:
            found = file.readline().rstrip(b"\r\n")
            if found != header:
                raise ValueError(f"{path}: expected the header {header.decode()!r}, got {found[:80]!r}")
        for line_number, line in enumerate(file, start=1 + (header is not None)):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            try:
                targets[row], lengths[row] = fill_row(inputs[row], line.split(b"\t"))
            except ValueError as error:
                raise ValueError(f"{path}:{line_number}: {error}") from None
            row += 1
            if row % 1000 == 0:
                progress.update(row)
    progress.finish(row)
    # Blank lines were skipped, so fewer rows may have been filled than counted.
    return {"inputs": inputs[:row], "targets": targets[:row], "lengths": lengths[:row]}


def token_task(name: str, *, num_classes: int, seq_len: int, vocab_size: int,
               splits: dict[str, dict[str, np.ndarray]]) -> TaskSpec:
    return TaskSpec(name=name, num_classes=num_classes, seq_len=seq_len, vocab_size=vocab_size, feature_dim=None,
                    splits=splits)


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")

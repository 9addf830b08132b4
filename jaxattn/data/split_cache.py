"""Generated or decoded datasets cached on disk as one ``.npz`` of named splits.

A cache file's name hashes every option that produced it (a format version among them), so
different settings never share a file; files are written whole and renamed into place, so a
concurrent reader (another process) never sees a partial one.

See docs/tasks.md#caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable

import numpy as np
from absl import logging


def cache_path(cache_dir: str | os.PathLike, name: str, options: dict) -> str:
    """``cache_dir/NAME_<hash of options>.npz`` (``options``: JSON-serialisable)."""
    key = json.dumps(options, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(os.fspath(cache_dir), f"{name}_{digest}.npz")


def save_splits(path: str, splits: dict[str, dict[str, np.ndarray]]) -> None:
    """Writes ``{split: {key: array}}`` to ``path`` atomically."""
    flat = {f"{split}/{key}": value for split, arrays in splits.items() for key, value in arrays.items()}
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temporary_path = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **flat)
        os.replace(temporary_path, path)
    except BaseException:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise


def load_splits(path: str) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {key: array}}`` as :func:`save_splits` wrote it."""
    splits: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as archive:
        for name in archive.files:
            split, key = name.split("/")
            splits.setdefault(split, {})[key] = archive[name]
    return splits


def cached_splits(cache_dir: str | os.PathLike | None, name: str, options: dict,
                  make_splits: Callable[[], dict[str, dict[str, np.ndarray]]], *,
                  announce: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``make_splits()``, kept in ``cache_dir`` (when given) under :func:`cache_path` of ``options``.

    A file already there is loaded instead of making the splits again. ``announce``, when given, is
    logged (with where the result will be kept) before the splits are made.
    """
    path = None if cache_dir is None else cache_path(cache_dir, name, options)
    if path is not None and os.path.exists(path):
        return load_splits(path)
    if announce is not None:
        logging.info("%s%s", announce, f", cached in {path}" if path else " (set cache_dir to keep them)")
    splits = make_splits()
    if path is not None:
        save_splits(path, splits)
    return splits


def check_split_sizes(sizes: dict[str, int], *, minimum: int) -> None:
    """ValueError naming ``num_<split>`` for a split of fewer than ``minimum`` examples."""
    for split, size in sizes.items():
        if size < minimum:
            raise ValueError(f"num_{split} must be >= {minimum}, got {size}")

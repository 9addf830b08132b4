"""LRA Text: byte-level IMDB sentiment classification (task "lra_text").

Layout: the raw IMDB archive (aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/,
not part of the LRA release; LRA reads the same reviews through TFDS "imdb_reviews")::

    aclImdb/train/neg/<id>_<rating>.txt   12,500 reviews, label 0
    aclImdb/train/pos/<id>_<rating>.txt   12,500 reviews, label 1
    aclImdb/test/{neg,pos}/...            25,000 reviews

(``train/unsup`` is ignored.) A review is its file's bytes with surrounding whitespace stripped (as
TFDS does), encoded byte by byte: token = byte + 1 (0 = padding, vocab 257), truncated to
`max_length` (LRA: 4096). Rows are ordered neg then pos, each by numeric review id.

Validation: with ``validation_fraction=0`` (default) the test set doubles as the validation set, as
in LRA (IMDB has no validation split; both splits then share one array). With a fraction > 0, that
fraction of the training reviews is held out, drawn by ``default_rng(split_seed)``.

See docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import os

import numpy as np

from jaxattn.data.lra.common import (BYTE_VOCAB_SIZE, Progress, check_fraction, encode_bytes, find_release_path,
                                     require_data_dir, resolve_input_dtype, seeded_split, take_rows, token_task)
from jaxattn.data.tasks import TaskSpec, register_task

IMDB_SOURCE = "the IMDB reviews aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/"
SUBDIR = "aclImdb"
CLASS_FOLDERS = ("neg", "pos")  # label = position
NUM_CLASSES = 2


def _review_order(name: str) -> tuple:
    stem = name.split("_", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def list_reviews(split_dir: str) -> tuple[list[str], np.ndarray]:
    """Review paths of one split folder (neg then pos, by numeric id) and their int32 labels."""
    paths, labels = [], []
    for label, folder in enumerate(CLASS_FOLDERS):
        class_dir = os.path.join(split_dir, folder)
        if not os.path.isdir(class_dir):
            raise FileNotFoundError(f"expected the folder {class_dir}; it comes from {IMDB_SOURCE}")
        names = sorted((name for name in os.listdir(class_dir) if name.endswith(".txt")), key=_review_order)
        paths += [os.path.join(class_dir, name) for name in names]
        labels += [label] * len(names)
    return paths, np.asarray(labels, dtype=np.int32)


def read_reviews(split_dir: str, *, max_length: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Byte tokens of every review in `split_dir`: "inputs" [N, max_length], "targets"/"lengths" int32 [N]."""
    paths, targets = list_reviews(split_dir)
    inputs = np.zeros((len(paths), max_length), dtype=dtype)
    lengths = np.zeros(len(paths), dtype=np.int32)
    progress = Progress(f"Reading {split_dir}", len(paths))
    for row, path in enumerate(paths):
        with open(path, "rb") as file:
            lengths[row] = encode_bytes(inputs[row], file.read().strip(), max_length)
        progress.update(row + 1)
    progress.finish(len(paths))
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise ValueError(f"{len(empty)} empty review(s), e.g. {paths[empty[0]]}; every sequence needs a token")
    return {"inputs": inputs, "targets": targets, "lengths": lengths}


@register_task("lra_text")
def build_lra_text_task(*, data_dir: str | os.PathLike | None = None, max_length: int = 4096,
                        validation_fraction: float = 0.0, split_seed: int = 0,
                        input_dtype: str | None = None) -> TaskSpec:
    """Builds byte-level IMDB: token inputs [N, max_length] (vocab 257), 2 classes.

    Args:
      data_dir: the folder holding ``aclImdb/`` or the ``aclImdb`` folder itself.
      max_length: padded length; longer reviews are truncated (LRA: 4096).
      validation_fraction: 0 uses the test set as validation (LRA); otherwise the held-out fraction of train.
      split_seed: seeds the held-out draw when validation_fraction > 0.
      input_dtype: None/"int32" or "uint16" for the token ids.
    """
    data_dir = require_data_dir(data_dir, "lra_text", f"aclImdb/ from {IMDB_SOURCE}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    check_fraction("validation_fraction", validation_fraction, allow_zero=True)
    dtype = resolve_input_dtype(input_dtype, tokens=True)
    read = {split: read_reviews(find_release_path(data_dir, split, subdir=SUBDIR, source=IMDB_SOURCE),
                                max_length=max_length, dtype=dtype)
            for split in ("train", "test")}
    if validation_fraction == 0.0:
        splits = {"train": read["train"], "validation": read["test"], "test": read["test"]}
    else:
        rows = seeded_split(len(read["train"]["targets"]), {"validation": validation_fraction}, seed=split_seed)
        splits = {split: take_rows(read["train"], rows[split]) for split in ("train", "validation")}
        splits["test"] = read["test"]
    return token_task("lra_text", num_classes=NUM_CLASSES, seq_len=max_length, vocab_size=BYTE_VOCAB_SIZE,
                      splits=splits)

"""LRA ListOps from the released TSV files (task "lra_listops").

Release layout (inside ``lra_release/``)::

    listops-1000/basic_train.tsv   96,000 rows
    listops-1000/basic_val.tsv      2,000 rows
    listops-1000/basic_test.tsv     2,000 rows

Each file starts with the header ``Source\tTarget``; a row is ``<expression>\t<value 0-9>``. The
expression is LRA's bracketed serialisation of the operator tree, where every application of an
operator to one more argument is wrapped in parentheses, e.g. ``[MAX 2 9 ]`` is written
``( ( ( [MAX 2 ) 9 ) ] )``. Tokenisation follows LRA: drop ``(`` and ``)`` and split on
whitespace, leaving ``[MAX 2 9 ]``. (LRA's own pipeline also renames ``]`` to ``X`` because its
tokenizer drops non-alphanumeric characters; that changes names, not token boundaries.)

Tokens map to the vocabulary of `jaxattn.data.listops` (the generator), so released and generated
ListOps share ids: 0 padding, 1-4 the operators, 5 ``]``, 6-15 the digits; vocab 16, 10 classes.
Sequences are truncated to `max_length` (LRA: 2000; the release has none longer).

See docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import os

import numpy as np

from jaxattn.data.listops import NUM_CLASSES, TOKEN_IDS, VOCAB_SIZE
from jaxattn.data.lra.common import (LRA_RELEASE_SOURCE, find_release_path, read_tsv_rows, require_data_dir,
                                     resolve_input_dtype, token_task)
from jaxattn.data.tasks import TaskSpec, register_task

SUBDIR = "listops-1000"
SPLIT_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = b"Source\tTarget"
_BYTE_TOKEN_IDS = {token.encode(): token_id for token, token_id in TOKEN_IDS.items() if token_id != 0}


def tokenize(source: bytes) -> list[int]:
    """Token ids of one released expression (parentheses dropped, whitespace split); KeyError on an unknown token."""
    return [_BYTE_TOKEN_IDS[token] for token in source.translate(None, b"()").split()]


def read_listops_tsv(path: str, *, max_length: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Reads one released ListOps TSV file.

    Returns:
      "inputs" [N, max_length] token ids (0-padded), "targets" int32 [N], "lengths" int32 [N].

    Raises:
      ValueError: on a missing header, a malformed row or a token outside the ListOps vocabulary
        (the message names the file and line).
    """
    def fill_row(inputs_row: np.ndarray, fields: list[bytes]) -> tuple[int, int]:
        if len(fields) != 2:
            raise ValueError(f"expected 2 tab-separated fields, got {len(fields)}")
        try:
            tokens = tokenize(fields[0])[:max_length]
        except KeyError as error:
            raise ValueError(f"token {error.args[0]!r} is not in the ListOps vocabulary "
                             f"{sorted(t.decode() for t in _BYTE_TOKEN_IDS)}") from None
        target = int(fields[1])
        if not 0 <= target < NUM_CLASSES:
            raise ValueError(f"target {target} outside 0..{NUM_CLASSES - 1}")
        if not tokens:
            raise ValueError("empty expression")
        inputs_row[:len(tokens)] = tokens
        return target, len(tokens)

    return read_tsv_rows(path, seq_len=max_length, dtype=dtype, fill_row=fill_row, header=HEADER)


@register_task("lra_listops")
def build_lra_listops_task(*, data_dir: str | os.PathLike | None = None, max_length: int = 2000,
                           input_dtype: str | None = None) -> TaskSpec:
    """Builds released LRA ListOps: token inputs [N, max_length], 10 classes, the release's own splits.

    Args:
      data_dir: the unpacked LRA release (holding ``listops-1000/``) or the ``listops-1000`` folder.
      max_length: padded length; longer expressions are truncated (LRA: 2000).
      input_dtype: None/"int32" or "uint16" (half the memory) for the token ids.
    """
    data_dir = require_data_dir(data_dir, "lra_listops", f"listops-1000/ from {LRA_RELEASE_SOURCE}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    paths = {split: find_release_path(data_dir, name, subdir=SUBDIR, source=LRA_RELEASE_SOURCE)
             for split, name in SPLIT_FILES.items()}
    dtype = resolve_input_dtype(input_dtype, tokens=True)
    splits = {split: read_listops_tsv(path, max_length=max_length, dtype=dtype) for split, path in paths.items()}
    return token_task("lra_listops", num_classes=NUM_CLASSES, seq_len=max_length, vocab_size=VOCAB_SIZE,
                      splits=splits)

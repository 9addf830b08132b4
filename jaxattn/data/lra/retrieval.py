"""LRA Retrieval: byte-level AAN citation matching of two documents (task "lra_retrieval").

Release layout (inside ``lra_release/``)::

    tsv_data/new_aan_pairs.train.tsv   ~147k rows
    tsv_data/new_aan_pairs.eval.tsv     ~18k rows   (-> "validation")
    tsv_data/new_aan_pairs.test.tsv     ~17k rows

No header; a row is ``label\tid1\tid2\ttext1\ttext2`` with tab as the only delimiter (no quoting,
as LRA reads it) and the label written as a number ("0", "1", or "0.0"/"1.0"; LRA parses it as a
float and casts it to int). Each text is byte-encoded (token = byte + 1, 0 = padding) and truncated
to `max_length` bytes (LRA: 4000); 2 classes (1 = the papers are linked by a citation).

LRA, S4 and S5 use a dual encoder: one shared encoder embeds each text separately and the classifier
reads ``[h1, h2, h1 * h2, h1 - h2]``. The models here classify one sequence, so a pair becomes one
row, by `layout`:

* ``"concat"`` (default): ``[text1 tokens, SEP, text2 tokens, 0 ...]`` with SEP = 257 (vocab 258),
  seq_len ``2 * max_length + 1``, ``lengths = len1 + 1 + len2``; padding only at the end, so
  every single-sequence model (masking by `lengths`) can read it.
* ``"halves"``: text1 in positions ``[0, max_length)`` and text2 in ``[max_length, 2 * max_length)``,
  each zero-padded in its half (vocab 257, seq_len ``2 * max_length``, ``lengths = 2 * max_length``);
  a dual-encoder model splits each row in the middle. Padding inside the row is NOT masked by `lengths`.

See docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import os

import numpy as np

from jaxattn.data.lra.common import (BYTE_VOCAB_SIZE, LRA_RELEASE_SOURCE, check_choice, encode_bytes,
                                     find_release_path, read_tsv_rows, require_data_dir, resolve_input_dtype,
                                     token_task)
from jaxattn.data.tasks import TaskSpec, register_task

SUBDIR = "tsv_data"
SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
               "test": "new_aan_pairs.test.tsv"}
LAYOUTS = ("concat", "halves")
SEP_TOKEN = BYTE_VOCAB_SIZE  # 257, right after the byte tokens 1..256
NUM_CLASSES = 2
_NUM_FIELDS = 5


def _parse_label(field: bytes) -> int:
    value = float(field)
    if value not in (0.0, 1.0):
        raise ValueError(f"label {field!r} is not 0 or 1")
    return int(value)


def read_pairs(path: str, *, max_length: int, layout: str, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Reads one AAN pairs file into single-sequence rows (see the module docstring for `layout`).

    Returns:
      "inputs" [N, 2 * max_length (+ 1 for "concat")], "targets" int32 [N], "lengths" int32 [N].

    Raises:
      ValueError: on a row without exactly 5 tab-separated fields or with a label other than 0/1
        (the message names the file and line).
    """
    check_choice("layout", layout, LAYOUTS)
    seq_len = 2 * max_length + (layout == "concat")

    def fill_row(inputs_row: np.ndarray, fields: list[bytes]) -> tuple[int, int]:
        if len(fields) != _NUM_FIELDS:
            raise ValueError(f"expected {_NUM_FIELDS} tab-separated fields "
                             f"(label, id1, id2, text1, text2), got {len(fields)}")
        target = _parse_label(fields[0])
        first = encode_bytes(inputs_row, fields[3], max_length)
        if layout == "halves":
            encode_bytes(inputs_row[max_length:], fields[4], max_length)
            return target, seq_len
        inputs_row[first] = SEP_TOKEN
        return target, first + 1 + encode_bytes(inputs_row[first + 1:], fields[4], max_length)

    return read_tsv_rows(path, seq_len=seq_len, dtype=dtype, fill_row=fill_row)


@register_task("lra_retrieval")
def build_lra_retrieval_task(*, data_dir: str | os.PathLike | None = None, max_length: int = 4000,
                             layout: str = "concat", input_dtype: str | None = None) -> TaskSpec:
    """Builds byte-level AAN retrieval as single-sequence classification; the release's own splits.

    Args:
      data_dir: the unpacked LRA release (holding ``tsv_data/``) or the ``tsv_data`` folder.
      max_length: bytes kept per document (LRA: 4000).
      layout: "concat" (``[text1, SEP, text2]``, vocab 258) or "halves" (two fixed halves, vocab 257).
      input_dtype: None/"int32" or "uint16" for the token ids (the full train split is
        147k x 8001 ids: 4.7 GB as int32).
    """
    data_dir = require_data_dir(data_dir, "lra_retrieval", f"tsv_data/ from {LRA_RELEASE_SOURCE}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    check_choice("layout", layout, LAYOUTS)
    paths = {split: find_release_path(data_dir, name, subdir=SUBDIR, source=LRA_RELEASE_SOURCE)
             for split, name in SPLIT_FILES.items()}
    dtype = resolve_input_dtype(input_dtype, tokens=True)
    splits = {split: read_pairs(path, max_length=max_length, layout=layout, dtype=dtype)
              for split, path in paths.items()}
    vocab_size = BYTE_VOCAB_SIZE + (layout == "concat")
    return token_task("lra_retrieval", num_classes=NUM_CLASSES, seq_len=2 * max_length + (layout == "concat"),
                      vocab_size=vocab_size, splits=splits)

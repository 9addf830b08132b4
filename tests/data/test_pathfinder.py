"""Tests for the Pathfinder generator: labels checked by a flood fill on the rendered images.

The check is independent of the generator's internals: with dash_gap g, pixels of one path lie
within g + sqrt(2) of the next one along it, and different paths keep farther apart than that, so
"linked" = ink pixels within that radius, and the label must equal "the markers are linked".
"""

import math
import os
import time

import numpy as np
import pytest

from jaxattn.data import load_task
from jaxattn.data.lra.pathfinder_generator import generate_pathfinder

OPTIONS = dict(resolution=32, path_length=9)  # distractor_length 3, num_distractors 6, dash_gap 1.5


def neighbour_offsets(radius):
    reach = int(radius)
    return [(dr, dc) for dr in range(-reach, reach + 1) for dc in range(-reach, reach + 1)
            if (dr, dc) != (0, 0) and dr * dr + dc * dc <= radius * radius]


def components(image, radius):
    """Labels [H, W] of the ink components, pixels joined when within `radius` (0 = background), and their count."""
    offsets = neighbour_offsets(radius)
    labels = np.zeros(image.shape, dtype=np.int32)
    count = 0
    for start in zip(*np.nonzero(image)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        stack = [start]
        while stack:
            row, col = stack.pop()
            for dr, dc in offsets:
                r, c = row + dr, col + dc
                if 0 <= r < image.shape[0] and 0 <= c < image.shape[1] and image[r, c] and not labels[r, c]:
                    labels[r, c] = count
                    stack.append((r, c))
    return labels, count


@pytest.fixture(scope="module")
def generated():
    return generate_pathfinder(48, seed=7, **OPTIONS)


def test_shapes_and_dtypes(generated):
    assert generated["images"].shape == (48, 32, 32) and generated["images"].dtype == np.uint8
    assert generated["labels"].dtype == np.int32 and generated["markers"].shape == (48, 2, 2)
    assert set(np.unique(generated["images"]).tolist()) == {0, 255}


def test_labels_balanced(generated):
    assert generated["labels"].sum() == 24  # exactly half of an even chunk
    labels = generate_pathfinder(301, seed=1, **OPTIONS)["labels"]
    assert set(labels.tolist()) == {0, 1} and abs(labels.sum() - 150.5) <= 0.5


def test_markers_are_drawn_discs(generated):
    disc = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]  # radius 1.5
    for image, markers in zip(generated["images"], generated["markers"]):
        assert not np.array_equal(markers[0], markers[1])
        for row, col in markers:
            assert all(image[row + dr, col + dc] == 255 for dr, dc in disc)


def test_label_matches_flood_fill_and_paths_are_separate_components(generated):
    radius = 1.5 + math.sqrt(2)
    for image, label, markers, distractors in zip(generated["images"], generated["labels"], generated["markers"],
                                                  generated["distractors"]):
        labels, count = components(image, radius)
        first, second = (labels[tuple(marker)] for marker in markers)
        assert first and second
        assert (first == second) == bool(label)
        assert count == 2 + distractors  # two main paths and the distractors, each one component
    assert (generated["distractors"] <= 6).all() and generated["distractors"].mean() > 5


def test_paths_are_dashed(generated):
    # Joined only as 8-neighbours, the paths fall apart into pieces: the dashes (up to 36 of them)
    # whose gaps survive rounding to whole pixels (about half do).
    for image in generated["images"][:8]:
        assert components(image, math.sqrt(2))[1] >= 1.5 * components(image, 1.5 + math.sqrt(2))[1]


def test_deterministic_per_seed(generated):
    again = generate_pathfinder(48, seed=7, **OPTIONS)
    other = generate_pathfinder(48, seed=8, **OPTIONS)
    for key in generated:
        np.testing.assert_array_equal(again[key], generated[key])
    assert not np.array_equal(other["images"], generated["images"])


def test_difficulty_sets_the_amount_of_ink():
    ink = {length: (generate_pathfinder(32, seed=0, resolution=32, path_length=length)["images"] > 0).mean()
           for length in (6, 14)}
    assert ink[14] > ink[6]


def test_small_canvas_drops_distractors_not_labels():
    arrays = generate_pathfinder(64, seed=0, resolution=16, path_length=9)
    assert arrays["distractors"].max() <= 6 and arrays["distractors"].min() >= 1
    radius = 0.75 + math.sqrt(2)  # dash_gap scales to 1.5 * 16 / 32
    for image, label, markers, distractors in zip(arrays["images"], arrays["labels"], arrays["markers"],
                                                  arrays["distractors"]):
        labels, count = components(image, radius)
        assert count == 2 + distractors and (labels[tuple(markers[0])] == labels[tuple(markers[1])]) == bool(label)


def test_other_resolution_and_options():
    arrays = generate_pathfinder(8, seed=0, resolution=64, path_length=6, num_distractors=2, dash_gap=3.0)
    assert arrays["images"].shape == (8, 64, 64)
    radius = 3.0 + math.sqrt(2)
    for image, label, markers, distractors in zip(arrays["images"], arrays["labels"], arrays["markers"],
                                                  arrays["distractors"]):
        labels, count = components(image, radius)
        assert count == 2 + distractors and (labels[tuple(markers[0])] == labels[tuple(markers[1])]) == bool(label)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="path_length"):
        generate_pathfinder(2, path_length=0)
    with pytest.raises(ValueError, match="max_turn"):
        generate_pathfinder(2, max_turn=4.0)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="too crowded"):
        generate_pathfinder(2, resolution=8, path_length=14, dash_length=4, dash_gap=2, max_attempts=1)
    assert time.perf_counter() - start < 10
    with pytest.raises(ValueError, match="num_test must be >= 1, got 0"):
        load_task("pathfinder_generated", num_train=2, num_validation=2, num_test=0)


def test_generation_speed():
    start = time.perf_counter()
    generate_pathfinder(1024, seed=0)  # LRA "hard" at 32 x 32
    assert time.perf_counter() - start < 30  # about 1-2 s on one idle core


def test_task_tokens_features_splits_and_cache(tmp_path):
    sizes = dict(num_train=40, num_validation=10, num_test=12)
    task = load_task("pathfinder_generated", **sizes, difficulty="easy", inputs="tokens", seed=2)
    assert (task.num_classes, task.seq_len, task.vocab_size, task.feature_dim) == (2, 1024, 257, None)
    assert [len(task.splits[s]["targets"]) for s in ("train", "validation", "test")] == [40, 10, 12]
    assert set(np.unique(task.splits["train"]["inputs"]).tolist()) == {1, 256}
    assert not np.array_equal(task.splits["validation"]["inputs"], task.splits["test"]["inputs"][:10])
    features = load_task("pathfinder_generated", **sizes, difficulty="easy", seed=2, cache_dir=tmp_path)
    assert features.splits["test"]["inputs"].shape == (12, 1024, 1)
    np.testing.assert_array_equal(features.splits["test"]["inputs"][..., 0],
                                  (task.splits["test"]["inputs"] - 1) / 127.5 - 1)
    (cache_file,) = os.listdir(tmp_path)
    with np.load(tmp_path / cache_file) as archive:
        contents = {name: archive[name] for name in archive.files}
    contents["test/labels"] = 1 - contents["test/labels"]  # a marker: a second build must read the file
    np.savez(tmp_path / cache_file, **contents)
    cached = load_task("pathfinder_generated", **sizes, difficulty="easy", seed=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.splits["test"]["targets"], 1 - task.splits["test"]["targets"])

"""Tests for the LRA Pathfinder / Path-X loader on tiny fixtures written here in the release layout
(PNG images, metadata files of 3 lines); expected pixels and labels are the ones written."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxattn.data import load_task


def write_pathfinder(root, *, resolution=32, folder="curv_contour_length_14", num_images=10, empty=(),
                     rgb=()):
    """Release layout; image k is random noise with pixel [0, 0] = k, label k % 2; 3 per metadata file."""
    base = root / f"pathfinder{resolution}" / folder
    (base / "metadata").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, lines_by_file = [], {}
    for k in range(num_images):
        directory, name = f"imgs/{k // 4}", f"sample_{k}.png"
        (base / directory).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(resolution, resolution), dtype=np.uint8)
        pixels[0, 0] = k
        images.append(pixels)
        if k in empty:
            (base / directory / name).write_bytes(b"")
        elif k in rgb:
            Image.fromarray(np.repeat(pixels[..., None], 3, axis=-1), mode="RGB").save(base / directory / name)
        else:
            Image.fromarray(pixels, mode="L").save(base / directory / name)
        lines_by_file.setdefault(k // 3, []).append(f"{directory} {name} {k} {k % 2} 14 4 5")
    for file_index, lines in lines_by_file.items():
        (base / "metadata" / f"{file_index}.npy").write_text("\n".join(lines) + "\n")
    return np.stack(images), base


def test_pathfinder_pixels_labels_and_split(tmp_path):
    images, _ = write_pathfinder(tmp_path, rgb=(4,))
    task = load_task("lra_pathfinder", data_dir=tmp_path, inputs="tokens", split_seed=3)
    assert (task.num_classes, task.seq_len, task.vocab_size) == (2, 1024, 257)
    sizes = [len(task.splits[split]["targets"]) for split in ("train", "validation", "test")]
    assert sizes == [8, 1, 1]
    seen = []
    for split in ("train", "validation", "test"):
        for ids, target in zip(task.splits[split]["inputs"], task.splits[split]["targets"]):
            k = int(ids[0]) - 1  # pixel [0, 0] holds the image index
            np.testing.assert_array_equal(ids, images[k].reshape(-1).astype(np.int32) + 1)
            assert target == k % 2
            seen.append(k)
    assert sorted(seen) == list(range(10))
    again = load_task("lra_pathfinder", data_dir=tmp_path, inputs="tokens", split_seed=3)
    np.testing.assert_array_equal(again.splits["test"]["inputs"], task.splits["test"]["inputs"])
    held_out = {tuple(load_task("lra_pathfinder", data_dir=tmp_path, inputs="tokens", split_seed=seed)
                      .splits[split]["inputs"][0, :1]) for seed in range(5) for split in ("validation",)}
    assert len(held_out) > 1  # the split follows split_seed


def test_pathfinder_features_difficulty_folder_and_empty_images(tmp_path):
    images, _ = write_pathfinder(tmp_path, folder="curv_baseline", empty=(2, 7))
    task = load_task("lra_pathfinder", data_dir=tmp_path / "pathfinder32", difficulty="easy",
                     validation_fraction=0.25, test_fraction=0.25)
    everything = np.concatenate([task.splits[split]["inputs"] for split in ("train", "validation", "test")])
    assert everything.shape == (8, 1024, 1) and everything.dtype == np.float32
    indices = sorted(int(round((row[0, 0] + 1) * 127.5)) for row in everything)
    assert indices == [0, 1, 3, 4, 5, 6, 8, 9]  # the empty files 2 and 7 are skipped
    np.testing.assert_allclose(everything.min(), images.min() / 127.5 - 1, atol=1e-6)
    with pytest.raises(FileNotFoundError, match=r"curv_contour_length_14"):
        load_task("lra_pathfinder", data_dir=tmp_path)  # default difficulty "hard" is absent


def test_pathfinder_metadata_order_max_images_and_cache(tmp_path):
    _, base = write_pathfinder(tmp_path, num_images=12)  # metadata 0.npy .. 3.npy
    (base / "metadata" / "3.npy").rename(base / "metadata" / "10.npy")  # numeric order: 0, 1, 2, 10
    task = load_task("lra_pathfinder", data_dir=tmp_path, inputs="tokens", max_images=7, cache_dir=tmp_path / "c")
    kept = sorted(int(ids[0]) - 1 for split in task.splits.values() for ids in split["inputs"])
    assert kept == list(range(7))
    for path in base.glob("imgs/*/*.png"):
        path.unlink()  # a second build must read the cache, not the images
    cached = load_task("lra_pathfinder", data_dir=tmp_path, inputs="tokens", max_images=7, cache_dir=tmp_path / "c")
    for split in task.splits:
        np.testing.assert_array_equal(cached.splits[split]["inputs"], task.splits[split]["inputs"])
    with pytest.raises(FileNotFoundError, match=r"sample_0.png is listed in the metadata but missing"):
        load_task("lra_pathfinder", data_dir=tmp_path, max_images=7)


def test_pathx_resolution_and_wrong_size(tmp_path):
    write_pathfinder(tmp_path, resolution=128, num_images=10)
    task = load_task("lra_pathx", data_dir=tmp_path, inputs="tokens", input_dtype="uint16")
    assert task.seq_len == 128 * 128 and task.splits["train"]["inputs"].dtype == np.uint16
    write_pathfinder(tmp_path / "bad", resolution=64, num_images=3)
    os.rename(tmp_path / "bad" / "pathfinder64", tmp_path / "bad" / "pathfinder32")
    with pytest.raises(ValueError, match="expected a 32 x 32 image"):
        load_task("lra_pathfinder", data_dir=tmp_path / "bad", validation_fraction=0.3, test_fraction=0.3)


def test_pathfinder_bad_metadata_line(tmp_path):
    _, base = write_pathfinder(tmp_path, num_images=3)
    (base / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0\n")
    with pytest.raises(ValueError, match=r"0.npy:1"):
        load_task("lra_pathfinder", data_dir=tmp_path)

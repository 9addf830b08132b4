"""LRA Pathfinder and Path-X from the released PNGs (tasks "lra_pathfinder" and "lra_pathx").

Release layout (inside ``lra_release/``), R in {32, 64, 128, 256} (LRA: Pathfinder = 32, Path-X = 128)::

    pathfinderR/<difficulty>/metadata/<k>.npy     text files despite the suffix, one line per image
    pathfinderR/<difficulty>/imgs/<k>/sample_<i>.png

with difficulty ``curv_baseline`` ("easy"), ``curv_contour_length_9`` ("intermediate") or
``curv_contour_length_14`` ("hard", the LRA benchmark setting). A metadata line is
space-separated: column 0 the image folder (``imgs/<k>``), column 1 the file name
(``sample_<i>.png``), column 3 the label (1 = the two markers are connected); the image is
``pathfinderR/<difficulty>/<column 0>/<column 1>``. Metadata files are read in numeric order of
``<k>``, lines in file order. Images are R x R 8-bit PNGs, read as grayscale (Pillow ``"L"``) and
flattened row-major to R^2 pixels. Empty image files (the release has at least one,
``pathfinder32/curv_baseline/imgs/0/sample_172.png``) are skipped with a warning, as LRA skips them.

Inputs (see `jaxattn.data.lra.pixels`): ``"features"`` (default, S4/S5) ``pixel / 127.5 - 1`` as
float [N, R^2, 1] (S4/S5's normalisation, mean 0.5 and std 0.5 on the 0..1 scale), or
``"tokens"``: pixel + 1, vocab 257 (LRA). Splits: LRA cuts 80/10/10 % of the images; here the
validation and test rows are drawn by ``default_rng(split_seed)`` (sizes ``int(fraction * N)``),
train is the rest. With `cache_dir`, the decoded pixels are kept in an .npz named after the
options, so later builds skip the PNG decoding (Path-X: 16 KB per image).

See docs/tasks.md#long-range-arena.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from jaxattn.data.lra.common import (LRA_RELEASE_SOURCE, Progress, check_choice, check_fraction, find_release_path,
                                     require_data_dir, seeded_split)
from jaxattn.data.lra.pixels import image_splits, image_task
from jaxattn.data.split_cache import cached_splits
from jaxattn.data.tasks import TaskSpec, register_task

DIFFICULTIES = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9", "hard": "curv_contour_length_14"}
RESOLUTIONS = (32, 64, 128, 256)
LABEL_COLUMN = 3
NUM_CLASSES = 2
FEATURE_MEAN, FEATURE_STD = 127.5, 127.5  # (pixel / 255 - 0.5) / 0.5
_CACHE_FORMAT_VERSION = 1


def _metadata_order(name: str) -> tuple:
    stem = os.path.splitext(name)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def read_metadata(difficulty_dir: str, *, max_images: int | None = None) -> tuple[list[str], np.ndarray]:
    """Image paths and int32 labels listed in ``difficulty_dir/metadata/*.npy`` (first `max_images` only)."""
    metadata_dir = os.path.join(difficulty_dir, "metadata")
    if not os.path.isdir(metadata_dir):
        raise FileNotFoundError(f"expected the folder {metadata_dir}; it comes from {LRA_RELEASE_SOURCE}")
    names = sorted((name for name in os.listdir(metadata_dir) if name.endswith(".npy")), key=_metadata_order)
    if not names:
        raise FileNotFoundError(f"no metadata/*.npy files in {metadata_dir}; they come from {LRA_RELEASE_SOURCE}")
    paths, labels = [], []
    for name in names:
        metadata_path = os.path.join(metadata_dir, name)
        with open(metadata_path) as file:
            for line_number, line in enumerate(file, start=1):
                columns = line.split()
                if not columns:
                    continue
                if len(columns) <= LABEL_COLUMN or columns[LABEL_COLUMN] not in ("0", "1"):
                    raise ValueError(f"{metadata_path}:{line_number}: expected '<folder> <file> <...> <label 0/1> "
                                     f"...', got {line.strip()[:80]!r}")
                paths.append(os.path.join(difficulty_dir, columns[0], columns[1]))
                labels.append(int(columns[LABEL_COLUMN]))
                if max_images is not None and len(paths) == max_images:
                    return paths, np.asarray(labels, dtype=np.int32)
    return paths, np.asarray(labels, dtype=np.int32)


def read_images(paths: list[str], labels: np.ndarray, *, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 pixels [N, resolution^2] and their labels, skipping empty files.

    Raises:
      FileNotFoundError: for an image listed in the metadata but absent.
      ValueError: for an image that is not resolution x resolution.
    """
    try:
        from PIL import Image  # Pillow comes with matplotlib, a dependency of this package
    except ImportError as error:
        raise ImportError("reading the Pathfinder PNGs needs Pillow (pip install pillow)") from error
    pixels = np.zeros((len(paths), resolution * resolution), dtype=np.uint8)
    kept = np.zeros(len(paths), dtype=bool)
    progress = Progress(f"Decoding {len(paths)} Pathfinder images", len(paths))
    for row, path in enumerate(paths):
        if not os.path.exists(path):
            raise FileNotFoundError(f"image {path} is listed in the metadata but missing; it comes from "
                                    f"{LRA_RELEASE_SOURCE}")
        if os.path.getsize(path) == 0:
            continue
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
        if gray.shape != (resolution, resolution):
            raise ValueError(f"{path}: expected a {resolution} x {resolution} image, got {gray.shape[::-1]} (W x H)")
        pixels[row] = gray.reshape(-1)
        kept[row] = True
        if row % 1000 == 0:
            progress.update(row + 1)
    progress.finish(len(paths))
    skipped = len(paths) - int(kept.sum())
    if skipped:
        logging.warning("Skipped %d empty Pathfinder image file(s), e.g. %s", skipped,
                        paths[int(np.flatnonzero(~kept)[0])])
        return pixels[kept], labels[kept]
    return pixels, labels


def load_pathfinder_pixels(data_dir: str, *, resolution: int, difficulty: str, max_images: int | None = None,
                           cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 pixels [N, resolution^2], int32 labels [N]) of one released Pathfinder folder, cached if asked."""
    check_choice("resolution", resolution, RESOLUTIONS)
    folder = DIFFICULTIES.get(difficulty, difficulty)
    check_choice("difficulty", folder, tuple(DIFFICULTIES) + tuple(DIFFICULTIES.values()))
    difficulty_dir = find_release_path(data_dir, folder, subdir=f"pathfinder{resolution}", source=LRA_RELEASE_SOURCE)

    def decode():
        paths, labels = read_metadata(difficulty_dir, max_images=max_images)
        pixels, labels = read_images(paths, labels, resolution=resolution)
        return {"all": {"pixels": pixels, "labels": labels}}

    arrays = cached_splits(cache_dir, "pathfinder", {"format": _CACHE_FORMAT_VERSION, "resolution": resolution,
                                                     "difficulty_dir": os.path.abspath(difficulty_dir),
                                                     "max_images": max_images}, decode)["all"]
    return arrays["pixels"], arrays["labels"]


def build_pathfinder_task(name: str, *, data_dir, resolution: int, difficulty: str, inputs: str,
                          validation_fraction: float, test_fraction: float, split_seed: int,
                          max_images: int | None, cache_dir, input_dtype: str | None) -> TaskSpec:
    data_dir = require_data_dir(data_dir, name, f"pathfinder{resolution}/ from {LRA_RELEASE_SOURCE}")
    check_fraction("validation_fraction", validation_fraction, allow_zero=False)
    check_fraction("test_fraction", test_fraction, allow_zero=False)
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(f"validation_fraction + test_fraction must be < 1, got "
                         f"{validation_fraction} + {test_fraction}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    pixels, labels = load_pathfinder_pixels(data_dir, resolution=resolution, difficulty=difficulty,
                                            max_images=max_images, cache_dir=cache_dir)
    rows = seeded_split(len(labels), {"validation": validation_fraction, "test": test_fraction}, seed=split_seed)
    splits = image_splits(pixels, labels, rows, inputs=inputs, mean=FEATURE_MEAN, std=FEATURE_STD, dtype=input_dtype)
    return image_task(name, num_classes=NUM_CLASSES, inputs=inputs, splits=splits)


@register_task("lra_pathfinder")
def build_lra_pathfinder_task(*, data_dir: str | os.PathLike | None = None, resolution: int = 32,
                              difficulty: str = "hard", inputs: str = "features", validation_fraction: float = 0.1,
                              test_fraction: float = 0.1, split_seed: int = 0, max_images: int | None = None,
                              cache_dir: str | os.PathLike | None = None, input_dtype: str | None = None) -> TaskSpec:
    """Builds released Pathfinder (default 32 x 32, "hard"): R^2 pixels per image, 2 classes.

    Args:
      data_dir: the unpacked LRA release (holding ``pathfinderR/``) or the ``pathfinderR`` folder.
      resolution: R, one of 32, 64, 128, 256.
      difficulty: "easy", "intermediate", "hard" or a folder name such as "curv_contour_length_14".
      inputs: "features" (float [N, R^2, 1]) or "tokens" (ids [N, R^2], vocab 257).
      validation_fraction, test_fraction: fractions of all images held out (LRA: 0.1 each).
      split_seed: seeds the split.
      max_images: read only the first images listed (quick runs); None reads all.
      cache_dir: keep the decoded pixels there (an .npz per data folder / resolution / max_images).
      input_dtype: None (int32 tokens / float32 features), "uint16" or "float16".
    """
    return build_pathfinder_task("lra_pathfinder", data_dir=data_dir, resolution=resolution, difficulty=difficulty,
                                 inputs=inputs, validation_fraction=validation_fraction, test_fraction=test_fraction,
                                 split_seed=split_seed, max_images=max_images, cache_dir=cache_dir,
                                 input_dtype=input_dtype)


@register_task("lra_pathx")
def build_lra_pathx_task(*, data_dir: str | os.PathLike | None = None, resolution: int = 128,
                         difficulty: str = "hard", inputs: str = "features", validation_fraction: float = 0.1,
                         test_fraction: float = 0.1, split_seed: int = 0, max_images: int | None = None,
                         cache_dir: str | os.PathLike | None = None, input_dtype: str | None = None) -> TaskSpec:
    """Path-X: `lra_pathfinder` at resolution 128 (sequences of 16,384 pixels); same options."""
    return build_pathfinder_task("lra_pathx", data_dir=data_dir, resolution=resolution, difficulty=difficulty,
                                 inputs=inputs, validation_fraction=validation_fraction, test_fraction=test_fraction,
                                 split_seed=split_seed, max_images=max_images, cache_dir=cache_dir,
                                 input_dtype=input_dtype)

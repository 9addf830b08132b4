"""A Pathfinder generator: are the two marked dots joined by one dashed path? (task "pathfinder_generated").

Each image (R x R, uint8, background 0, ink 255) holds two *main* paths of `path_length` dashes,
`num_distractors` shorter paths of `distractor_length` dashes, and two markers: filled discs of
`marker_radius` centred on path ends. Label 1 (connected): the markers sit on the two ends of the
first main path. Label 0: one marker sits on an end of each main path. Both classes draw the same
kinds of paths, so only the marker placement tells them apart (the design of Linsley et al. 2018,
whose generator made LRA's images; this is an independent, simplified implementation: binary ink,
1-pixel lines, no anti-aliasing, its own path-growing rule).

A path is a chain of straight dashes of `dash_length` pixels; the next dash starts `dash_gap`
pixels further along the current heading, and its heading turns by at most `max_turn`. Paths grow
dash by dash: each dash tries a few random headings and keeps a random one that lands on free
canvas and leaves room for a further dash (see `_grow_paths`). Dashes are rasterised by rounding
points sampled every <= 0.5 pixel, so consecutive pixels of a dash are 8-neighbours.

Ground truth by construction, checkable on the image alone. Let ``link_radius = dash_gap + sqrt(2)``
(the gap plus the rounding of both ends). Then
  * consecutive pixels along one path (and a marker and its path) lie within ``link_radius``;
  * pixels of different paths, markers included, are farther apart than ``link_radius``: a path
    (with discs at both ends of a main path, drawn or not) only grows where it keeps that clearance
    from everything placed before. A path that cannot grow is retried (`max_attempts` rounds); then
    a main path has the whole image redrawn, a distractor is left out (so on a crowded canvas a few
    images hold fewer than `num_distractors`; this does not depend on the label).
So the label equals "a flood fill over ink pixels, joining pixels within ``link_radius``, reaches
one marker from the other".

Difficulty follows LRA's settings at 32 x 32: path_length 6 / 9 / 14 ("easy" / "intermediate" /
"hard"), distractor_length = path_length // 3, num_distractors = 20 // distractor_length. Defaults
at 32 x 32: dash_length 2 and marker_radius 1.5 (LRA's), dash_gap 1.5 (LRA: 1 with anti-aliased
strokes; with 1.5 about half the gaps stay open between 8-neighbours after rounding to whole
pixels); all three scale with R / 32 (the marker radius never below 1.5, so a marker stays a 3 x 3
blob unlike any 1-pixel line), the dash counts do not, so a larger R gives a scaled-up image of the
same difficulty. Below 32 x 32 the fixed line width and rounding crowd the canvas: at 16 x 16 most
"hard" images keep only 2 or 3 of their 5 distractors ("easy" 8-10 of 10). At 32 x 32 "hard",
about 4 % of the images keep 4 of 5, the rest all.

Generation is vectorised over the images of a chunk of 1024; chunk c draws from
``default_rng((*seed, c))``, so the images are a function of (seed, options, number of images)
and whole chunks do not change when more images are asked for. Labels are exactly balanced within
each chunk (a seeded permutation of alternating 0/1).

See docs/tasks.md#generated-pathfinder.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from jaxattn.data.lra.common import Progress, check_choice
from jaxattn.data.lra.pathfinder_release import FEATURE_MEAN, FEATURE_STD
from jaxattn.data.lra.pixels import image_splits, image_task
from jaxattn.data.split_cache import cached_splits, check_split_sizes
from jaxattn.data.tasks import SPLIT_NAMES, TaskSpec, register_task

INK = 255
CHUNK_SIZE = 1024
SAMPLE_SPACING = 0.5  # pixels between rasterised points of a dash
DIFFICULTY_PATH_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}
_MAX_IMAGE_ROUNDS = 50
_CANDIDATE_TURNS = 8  # headings tried per dash
_LOOKAHEAD_TURNS = 5  # next-dash headings checked for each candidate
# Paths grown at once per image and slot (the first that succeeds is kept): about this many in all.
_REPLICA_BUDGET, _MAX_REPLICAS = 2048, 16
_START_TRIES = 32  # random pixels tried per start
_CACHE_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PathfinderGeometry:
    """Resolved generation options (lengths in pixels, angles in radians); see the module docstring."""

    resolution: int
    path_length: int
    distractor_length: int
    num_distractors: int
    dash_length: float
    dash_gap: float
    marker_radius: float
    max_turn: float
    max_attempts: int

    @property
    def link_radius(self) -> float:
        """Upper bound on the distance between consecutive pixels of one path; lower bound (exclusive) across paths."""
        return self.dash_gap + math.sqrt(2.0)


def make_geometry(*, resolution: int = 32, path_length: int = 14, distractor_length: int | None = None,
                  num_distractors: int | None = None, dash_length: float | None = None,
                  dash_gap: float | None = None, marker_radius: float | None = None,
                  max_turn: float = math.pi / 3, max_attempts: int = 40) -> PathfinderGeometry:
    """Fills the defaults (module docstring) and validates the options (ValueError naming the bad one)."""
    scale = resolution / 32
    if distractor_length is None:
        distractor_length = max(1, path_length // 3)
    if num_distractors is None:
        num_distractors = 20 // max(distractor_length, 1)
    geometry = PathfinderGeometry(
        resolution=resolution, path_length=path_length, distractor_length=distractor_length,
        num_distractors=num_distractors,
        dash_length=2.0 * scale if dash_length is None else float(dash_length),
        dash_gap=1.5 * scale if dash_gap is None else float(dash_gap),
        marker_radius=max(1.5, 1.5 * scale) if marker_radius is None else float(marker_radius),
        max_turn=float(max_turn), max_attempts=max_attempts)
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    for name in ("path_length", "distractor_length", "max_attempts"):
        if getattr(geometry, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(geometry, name)}")
    if geometry.num_distractors < 0:
        raise ValueError(f"num_distractors must be >= 0, got {geometry.num_distractors}")
    if geometry.dash_length <= 0 or geometry.dash_gap < 0 or geometry.marker_radius < 0:
        raise ValueError(f"need dash_length > 0, dash_gap >= 0, marker_radius >= 0; got {geometry.dash_length}, "
                         f"{geometry.dash_gap}, {geometry.marker_radius}")
    if not 0 <= geometry.max_turn <= math.pi:
        raise ValueError(f"max_turn must lie in [0, pi], got {geometry.max_turn}")
    return geometry


def disc_offsets(radius: float) -> np.ndarray:
    """int32 [K, 2] integer (row, col) offsets with row^2 + col^2 <= radius^2 (the origin included)."""
    reach = int(math.floor(radius))
    grid = np.arange(-reach, reach + 1)
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    inside = rows ** 2 + cols ** 2 <= radius ** 2 + 1e-9
    return np.stack([rows[inside], cols[inside]], axis=-1).astype(np.int32)


def _free_starts(rng: np.random.Generator, blocked: np.ndarray, images: np.ndarray, pad: int, size: int,
                 footprint: np.ndarray, replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """`replicas` random start pixels per image whose `footprint` (offsets) avoids ``blocked[images]``.

    Each replica takes the first free one of `_START_TRIES` uniform pixels (cheap at any resolution).

    Returns:
      found bool [m, replicas] and (row, col) int32 [m, replicas, 2].
    """
    tries = rng.integers(0, size, size=(len(images), replicas, _START_TRIES, 2), dtype=np.int32)
    rows = np.broadcast_to(images[:, None, None], tries.shape[:-1]).reshape(-1)
    free = _is_free(blocked, rows, tries.reshape(-1, 1, 2) + footprint, pad).reshape(tries.shape[:-1])
    first = free.argmax(axis=-1)
    start = np.take_along_axis(tries, first[..., None, None], axis=2)[:, :, 0]
    return free.any(axis=-1), start


def _dash_pixels(position: np.ndarray, directions: np.ndarray, along: np.ndarray) -> np.ndarray:
    """int32 [n, K, S, 2] pixels of dashes from `position` [n, 2] along unit `directions` [n, K, 2] (row, col)."""
    points = position[:, None, None, :] + along[:, None] * directions[:, :, None, :]
    return np.rint(points).astype(np.int32)


def _is_free(blocked: np.ndarray, rows: np.ndarray, pixels: np.ndarray, pad: int) -> np.ndarray:
    """bool [n, ...]: whether all pixels [n, ..., P, 2] of row i avoid ``blocked[rows[i]]``.

    Pixels beyond the padding count as blocked (they are clipped into it).
    """
    side = blocked.shape[1]
    index = np.clip(pixels + pad, 0, side - 1)
    flat = (rows.reshape((-1,) + (1,) * (pixels.ndim - 2)).astype(np.int64) * side + index[..., 0]) * side
    return ~np.take(blocked.reshape(-1), flat + index[..., 1]).any(axis=-1)


def _grow_paths(rng: np.random.Generator, blocked: np.ndarray, images: np.ndarray, num_dashes: int,
                geometry: PathfinderGeometry, pad: int, with_end_discs: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grows candidate paths (replicas) in each of `images`, dash by dash, avoiding `blocked` (True = taken).

    A path starts at a random free pixel (for a main path, one whose end disc is free). Each dash
    draws `_CANDIDATE_TURNS` headings (uniform within max_turn of the previous one; uniform on the
    circle for the first) and picks uniformly among those whose pixels are free and after which the
    far end of some next dash (one of `_LOOKAHEAD_TURNS` evenly spread turns) is free too; for the
    last dash of a main path the end disc must be free instead. A path with no such heading fails.
    The one-dash lookahead keeps long paths from running into walls and dead ends; the replicas
    cut the number of retries.

    Returns:
      grown bool [m, r]; ink int32 [m, r, P, 2] (the first and last pixels are the ends); reserved
      int32 [m, r, P', 2] (ink plus, with `with_end_discs`, discs of marker_radius at both ends).
    """
    count, size = len(images), geometry.resolution
    disc = disc_offsets(geometry.marker_radius)
    footprint = disc if with_end_discs else np.zeros((1, 2), np.int32)
    # Many images: few replicas each (work); few images: many (per-call overhead dominates).
    replicas = int(np.clip(_REPLICA_BUDGET // count, 1, _MAX_REPLICAS))
    found, start = _free_starts(rng, blocked, images, pad, size, footprint, replicas)
    n = count * replicas
    live = np.flatnonzero(found.reshape(n))  # lines still growing; dead ones are dropped at once
    owners = np.repeat(images, replicas)[live]
    position = start.reshape(n, 2)[live] + rng.uniform(-0.49, 0.49, size=(len(live), 2))  # rounds to the start
    num_samples = int(math.ceil(geometry.dash_length / SAMPLE_SPACING)) + 1
    along = np.linspace(0.0, geometry.dash_length, num_samples)
    step = geometry.dash_length + geometry.dash_gap
    follow_turns = np.linspace(-geometry.max_turn, geometry.max_turn, _LOOKAHEAD_TURNS)
    follow_sin, follow_cos = np.sin(follow_turns), np.cos(follow_turns)
    heading = np.zeros(len(live))
    ink = np.zeros((n, num_dashes, num_samples, 2), dtype=np.int32)
    for dash in range(num_dashes):
        if dash == 0:
            headings = rng.uniform(0.0, 2.0 * math.pi, size=(len(live), _CANDIDATE_TURNS))
        else:
            headings = heading[:, None] + rng.uniform(-geometry.max_turn, geometry.max_turn,
                                                      size=(len(live), _CANDIDATE_TURNS))
        directions = np.stack([np.sin(headings), np.cos(headings)], axis=-1)  # (row, col) [n_live, K, 2]
        pixels = _dash_pixels(position, directions, along)  # [n_live, K, S, 2]
        free = _is_free(blocked, owners, pixels, pad)
        if dash == num_dashes - 1:
            if with_end_discs:
                free &= _is_free(blocked, owners, pixels[:, :, -1:, :] + disc[None, None], pad)
        else:
            # Lookahead (a heuristic; placement itself is checked above): the far end of a next dash,
            # turned by each of the follow turns (angle sums written out, no trigonometry per turn).
            next_position = position[:, None, :] + step * directions
            sin, cos = directions[..., 0, None], directions[..., 1, None]  # [n_live, K, 1]
            next_ends = np.rint(next_position[:, :, None, :] + geometry.dash_length * np.stack(
                [sin * follow_cos + cos * follow_sin, cos * follow_cos - sin * follow_sin], axis=-1)
            ).astype(np.int32)  # [n_live, K, F, 2]
            free &= _is_free(blocked, owners, next_ends[..., None, :], pad).any(axis=-1)
        survives = free.any(axis=1)
        choice = (rng.random(free.shape) * free).argmax(axis=1)[survives]
        live, owners, position = live[survives], owners[survives], position[survives]
        picked = np.arange(len(live)), choice
        ink[live, dash] = pixels[survives][picked]
        heading = headings[survives][picked]
        position = position + step * directions[survives][picked]
    grown = np.zeros(n, dtype=bool)
    grown[live] = True
    ink = ink.reshape(n, -1, 2)
    reserved = ink
    if with_end_discs:
        reserved = np.concatenate([ink, ink[:, :1] + disc[None], ink[:, -1:] + disc[None]], axis=1)
    return (grown.reshape(count, replicas), ink.reshape(count, replicas, *ink.shape[1:]),
            reserved.reshape(count, replicas, *reserved.shape[1:]))


def _attempt_images(rng: np.random.Generator, labels: np.ndarray, geometry: PathfinderGeometry
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One try at len(labels) images.

    Returns:
      placed bool [M] (both main paths drawn), images uint8 [M, R, R], markers int32 [M, 2, 2] and
      the number of distractors drawn int32 [M] (a distractor that finds no room is left out).
    """
    count, size = len(labels), geometry.resolution
    # Wide enough that a dash (and an end disc) started inside the canvas ends inside the padding.
    reach = geometry.dash_length + geometry.dash_gap + geometry.marker_radius
    pad = int(math.ceil(max(geometry.link_radius, reach))) + 2
    link = disc_offsets(geometry.link_radius)
    images = np.zeros((count, size, size), dtype=np.uint8)
    blocked = np.ones((count, size + 2 * pad, size + 2 * pad), dtype=bool)  # True outside the canvas
    blocked[:, pad:pad + size, pad:pad + size] = False
    ends = np.zeros((count, 2, 2, 2), dtype=np.int32)  # [image, main path, end, (row, col)]
    placed = np.ones(count, dtype=bool)
    num_drawn = np.zeros(count, dtype=np.int32)  # distractors drawn per image
    slots = [geometry.path_length] * 2 + [geometry.distractor_length] * geometry.num_distractors
    for slot, num_dashes in enumerate(slots):
        main = slot < 2
        todo = np.flatnonzero(placed)
        for _ in range(geometry.max_attempts):
            if not len(todo):
                break
            grown, ink, reserved = _grow_paths(rng, blocked, todo, num_dashes, geometry, pad, with_end_discs=main)
            done = grown.any(axis=1)
            replica = grown.argmax(axis=1)[done]  # the first grown replica
            accepted = todo[done]
            ink, reserved = ink[done, replica], reserved[done, replica]
            images[accepted[:, None], ink[..., 0], ink[..., 1]] = INK
            # Block everything within link_radius of the new path, so later paths keep their clearance.
            for row_offset, col_offset in link:
                blocked[accepted[:, None], reserved[..., 0] + pad + row_offset,
                        reserved[..., 1] + pad + col_offset] = True
            if main:
                ends[accepted, slot, 0] = ink[:, 0]
                ends[accepted, slot, 1] = ink[:, -1]
            if not main:
                num_drawn[accepted] += 1
            todo = todo[~done]
        if main:
            placed[todo] = False  # without both main paths there is no image: redraw it
    first_end = rng.integers(0, 2, size=count)
    second_end = rng.integers(0, 2, size=count)
    rows = np.arange(count)
    markers = np.stack([ends[rows, 0, first_end],
                        np.where(labels[:, None] == 1, ends[rows, 0, 1 - first_end], ends[rows, 1, second_end])],
                       axis=1)
    disc = disc_offsets(geometry.marker_radius)
    for marker in range(2):
        centres = markers[placed, marker]
        images[rows[placed, None], centres[:, None, 0] + disc[None, :, 0], centres[:, None, 1] + disc[None, :, 1]] = INK
    return placed, images, markers, num_drawn


def _generate_chunk(rng: np.random.Generator, count: int, geometry: PathfinderGeometry
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(count) % 2).astype(np.int32)
    images = np.zeros((count, geometry.resolution, geometry.resolution), dtype=np.uint8)
    markers = np.zeros((count, 2, 2), dtype=np.int32)
    distractors = np.zeros(count, dtype=np.int32)
    pending = np.arange(count)
    for _ in range(_MAX_IMAGE_ROUNDS):
        placed, new_images, new_markers, drawn = _attempt_images(rng, labels[pending], geometry)
        images[pending[placed]] = new_images[placed]
        markers[pending[placed]] = new_markers[placed]
        distractors[pending[placed]] = drawn[placed]
        if len(pending) >= 64 and placed.mean() < 0.01:
            break  # fewer than 1 in 100 images fit: give up now rather than after many slow rounds
        pending = pending[~placed]
        if not len(pending):
            return images, labels, markers, distractors
    raise ValueError(f"could not draw both main paths in {len(pending)} of {count} images (in up to "
                     f"{_MAX_IMAGE_ROUNDS} redraws): the canvas is too crowded for {geometry}; lower path_length "
                     "or the dash sizes, or raise max_turn / max_attempts / resolution")


def generate_pathfinder(num_images: int, *, seed: int | Sequence[int] = 0, **geometry_options
                        ) -> dict[str, np.ndarray]:
    """Generates `num_images` Pathfinder images (options: `make_geometry`).

    Returns:
      "images" uint8 [N, R, R] (0 background, 255 ink), "labels" int32 [N] (1 = connected),
      "markers" int32 [N, 2, 2]: the (row, col) centres of the two marker discs, "distractors"
      int32 [N]: distractors drawn (num_distractors unless the canvas had no room for some).
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    geometry = make_geometry(**geometry_options)
    seed_words = tuple(seed) if isinstance(seed, Sequence) else (seed,)
    progress = Progress("Generating Pathfinder images", num_images)
    parts = []
    for chunk, start in enumerate(range(0, num_images, CHUNK_SIZE)):
        parts.append(_generate_chunk(np.random.default_rng((*seed_words, chunk)),
                                     min(CHUNK_SIZE, num_images - start), geometry))
        progress.update(start + len(parts[-1][1]))
    if not parts:
        size = geometry.resolution
        return {"images": np.zeros((0, size, size), np.uint8), "labels": np.zeros(0, np.int32),
                "markers": np.zeros((0, 2, 2), np.int32), "distractors": np.zeros(0, np.int32)}
    return {key: np.concatenate([part[index] for part in parts])
            for index, key in enumerate(("images", "labels", "markers", "distractors"))}


@register_task("pathfinder_generated")
def build_pathfinder_generated_task(*, num_train: int = 160_000, num_validation: int = 20_000,
                                    num_test: int = 20_000, resolution: int = 32, difficulty: str = "hard",
                                    path_length: int | None = None, distractor_length: int | None = None,
                                    num_distractors: int | None = None, dash_length: float | None = None,
                                    dash_gap: float | None = None, marker_radius: float | None = None,
                                    max_turn: float = math.pi / 3, inputs: str = "features", seed: int = 0,
                                    cache_dir: str | os.PathLike | None = None,
                                    input_dtype: str | None = None) -> TaskSpec:
    """Builds generated Pathfinder: R^2 pixels per image, 2 classes; split i uses seed ``(seed, i)``.

    Defaults mirror LRA's Pathfinder-32 "hard" (160k / 20k / 20k images); `difficulty` picks
    path_length 6 / 9 / 14 unless `path_length` is given. Inputs as `lra_pathfinder` ("features":
    ``pixel / 127.5 - 1`` float [N, R^2, 1]; "tokens": pixel + 1, vocab 257). With `cache_dir`,
    the images are loaded from / saved to ``pathfinder_generated_<hash of options>.npz`` there
    (the default 200k images take a few minutes to generate on one core; 10k about 10-20 s).
    """
    check_choice("difficulty", difficulty, tuple(DIFFICULTY_PATH_LENGTHS))
    if path_length is None:
        path_length = DIFFICULTY_PATH_LENGTHS[difficulty]
    geometry_options = dict(resolution=resolution, path_length=path_length,
                            distractor_length=distractor_length, num_distractors=num_distractors,
                            dash_length=dash_length, dash_gap=dash_gap, marker_radius=marker_radius,
                            max_turn=max_turn)
    make_geometry(**geometry_options)  # validate before any work
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    check_split_sizes(sizes, minimum=1)

    def generate():
        generated = {}
        for index, split in enumerate(SPLIT_NAMES):
            arrays = generate_pathfinder(sizes[split], seed=(seed, index), **geometry_options)
            generated[split] = {"pixels": arrays["images"].reshape(sizes[split], -1), "labels": arrays["labels"]}
        return generated

    generated = cached_splits(cache_dir, "pathfinder_generated",
                              {"format": _CACHE_FORMAT_VERSION, "seed": seed, **sizes, **geometry_options}, generate,
                              announce=f"Generating Pathfinder: {sizes} images of {resolution} x {resolution}")
    splits = {}
    for split, arrays in generated.items():
        rows = np.arange(len(arrays["labels"]))
        splits.update(image_splits(arrays["pixels"], arrays["labels"], {split: rows}, inputs=inputs,
                                   mean=FEATURE_MEAN, std=FEATURE_STD, dtype=input_dtype))
    return image_task("pathfinder_generated", num_classes=2, inputs=inputs, splits=splits)

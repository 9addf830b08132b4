"""Ops called with ``block_sizes=None`` run the cached sizes of their problem's bucket: what reaches
each kernel family's resolution is the cached instance (docs/autotune.md#how-the-ops-pick-it-up)."""

import jax
import pytest

from jaxattn.autotune import OPS, Shape, cache, use_device_kind
from jaxattn.autotune.candidates import GRIDS, grid_candidates
from jaxattn.autotune.keys import entry_key
from jaxattn.autotune.search import kernel_request
from pallas_kernels.block_sizes import set_tuned_lookup
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes

from conftest import FAKE_GPU

SHAPE = Shape(batch=1, length=16, heads=2, head_dim=16)
EXPECTED_SIZES = {
    "linear_attention": dict(batch_heads=2, chunk_size=64, head_dim=16, length=16, value_dim=16),
    "softmax_attention": dict(batch_heads=2, head_dim=16, keys=16, queries=16, value_dim=16),
    "tensor_attention": dict(batch_heads=2, head_dim=16, length=16, value_dim=16),
    "delta_rule": dict(batch_heads=2, chunk_size=64, head_dim=16, length=16, value_dim=16),
    "diagonal_scan": dict(batch=1, features=32, length=16),
    "lmul_dot_general": dict(cols=16, depth=16, groups=2, rows=16),
}


def spy_on_resolution(monkeypatch, family):
    """Records the ``block_sizes`` every call of ``family.for_each_platform`` receives."""
    seen = []
    original = family.for_each_platform

    def for_each_platform(cls, block_sizes, *args, **kwargs):
        seen.append(block_sizes)
        return original(block_sizes, *args, **kwargs)

    monkeypatch.setattr(family, "for_each_platform", classmethod(for_each_platform))
    return seen


@pytest.mark.parametrize("op", list(EXPECTED_SIZES))
def test_op_without_block_sizes_runs_the_cached_ones(caches, monkeypatch, op):
    _, user = caches
    spec = OPS[op]
    arrays = spec.make_inputs(jax.random.key(0), SHAPE, "float32")
    name, dtype, sizes = kernel_request(spec, arrays, {}, True)
    assert (name, dtype, sizes) == (op, "float32", EXPECTED_SIZES[op])
    tuned = grid_candidates(GRIDS[spec.family]["triton"])[-1]  # the grid's last: no default has it all
    cache.write_entry(user, entry_key(FAKE_GPU, op, dtype, sizes),
                      {"family": spec.family.__name__, "platform": "triton", "block_sizes": tuned})
    expected = spec.family("triton", **tuned)
    assert expected != spec.family.default("triton", "float32", 16)

    seen = spy_on_resolution(monkeypatch, spec.family)
    jax.eval_shape(lambda *a: spec.call(a, impl="pallas", interpret=True), *arrays)
    assert seen and all(spec.family.chosen(given, "triton") == expected for given in seen)

    seen.clear()
    with use_device_kind("Another GPU"):  # no entry for this kind: the built-in defaults
        jax.eval_shape(lambda *a: spec.call(a, impl="pallas", interpret=True), *arrays)
    assert seen and all(given is None for given in seen)

    seen.clear()
    mine = spec.family("triton")
    jax.eval_shape(lambda *a: spec.call(a, impl="pallas", block_sizes=mine, interpret=True), *arrays)
    assert seen and all(spec.family.chosen(given, "triton") is mine for given in seen)


def test_tuned_asks_the_lookup_only_for_platforms_left_to_the_defaults():
    asked = []

    def lookup(family, platform, op, dtype, sizes):
        asked.append((family, platform, op, dtype, dict(sizes)))
        return family(platform, block_q=256) if platform == "tpu" else None

    previous = set_tuned_lookup(lookup)
    try:
        given = FlashBlockSizes("triton", block_q=16)
        found = FlashBlockSizes.tuned(given, "softmax_attention", "float32", length=8)
        assert set(found) == {given, FlashBlockSizes("tpu", block_q=256)}
        assert asked == [(FlashBlockSizes, "tpu", "softmax_attention", "float32", dict(length=8))]
        both = (FlashBlockSizes("tpu"), given)
        assert FlashBlockSizes.tuned(both, "softmax_attention", "float32", length=8) is both
        assert len(asked) == 1
        assert FlashBlockSizes.tuned(None, "op", "float32") == (FlashBlockSizes("tpu", block_q=256),)
        set_tuned_lookup(None)
        assert FlashBlockSizes.tuned(None, "op", "float32") is None
    finally:
        set_tuned_lookup(previous)

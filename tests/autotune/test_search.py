"""The search on CPU (the Pallas interpreter) with an injected timer: it picks the fastest accepted
candidate, rejects invalid, failing and wrong ones, and writes the winner under the right key."""

import dataclasses
import json

import jax
import pytest

from jaxattn.autotune import OPS, autotune
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes

from conftest import FAKE_GPU

# B=2, T=20 (bucket 32), H=1, D=16: one or two blocks per axis.
PROBLEM = dict(batch=2, length=20, heads=1, head_dim=16, dtype="float32", interpret=True)
KEY = f"{FAKE_GPU} | softmax_attention | float32 | batch_heads=2,head_dim=16,keys=32,queries=32,value_dim=16"


def triton_sizes(block_sizes):
    return FlashBlockSizes.chosen(block_sizes, "triton")


def timer_by_block_q(seconds):
    """A deterministic timer: ``seconds[block_q]`` (None: the defaults)."""
    calls = []

    def timer(run, block_sizes):
        jax.block_until_ready(run())
        calls.append(block_sizes)
        return seconds[block_sizes.block_q]

    return timer, calls


def test_search_picks_the_fastest_accepted_candidate_and_writes_it(caches):
    _, user = caches
    timer, timed = timer_by_block_q({None: 3.0, 16: 2.0, 32: 1.0})
    lines = []
    candidates = [{}, dict(block_q=16, block_k=16), dict(block_q=32, block_k=16, num_warps=8), dict(block_q=48)]
    result = autotune("softmax_attention", **PROBLEM, candidates=candidates, timer=timer, progress=lines.append)
    assert result.key == KEY
    assert [m.ok for m in result.measurements] == [True, True, True, False]
    assert result.measurements[3].rejected.startswith("invalid: FlashBlockSizes: `block_q` must be a power of two")
    assert result.best.candidate == dict(block_q=32, block_k=16, num_warps=8) and result.best.seconds == 1.0
    assert len(timed) == 3 and len(lines) == 4 and "rejected (invalid" in lines[3]
    stored = json.loads(user.read_text())["entries"]
    assert list(stored) == [KEY]
    assert stored[KEY]["block_sizes"] == dict(block_q=32, block_k=16, num_warps=8)
    assert stored[KEY]["platform"] == "triton" and stored[KEY]["family"] == "FlashBlockSizes"
    assert stored[KEY]["default_seconds"] == 3.0 and stored[KEY]["rejected"] == 1 and stored[KEY]["mode"] == "forward"


def test_wrong_or_failing_candidates_are_rejected_never_chosen(caches):
    _, user = caches
    real = OPS["softmax_attention"]

    def call(arrays, **kw):
        sizes = triton_sizes(kw.get("block_sizes"))
        out = real.call(arrays, **kw)
        if sizes is not None and sizes.block_q == 16:
            return out * 1.01  # a tiling that computes the wrong thing
        if sizes is not None and sizes.block_q == 64:
            raise RuntimeError("out of shared memory\nsecond line")
        return out

    broken = dataclasses.replace(real, call=call)
    timer, _ = timer_by_block_q({None: 3.0, 16: 0.5, 64: 0.1})
    candidates = [{}, dict(block_q=16, block_k=16), dict(block_q=64)]
    result = autotune(broken, **PROBLEM, candidates=candidates, timer=timer)
    assert result.measurements[1].rejected.startswith("wrong output: relative error 1.00e-02 > 2e-03")
    assert result.measurements[2].rejected == "error: RuntimeError: out of shared memory"
    assert result.best.candidate == {}
    assert json.loads(user.read_text())["entries"][KEY]["block_sizes"] == {}


def test_no_accepted_candidate_writes_nothing(caches):
    _, user = caches
    result = autotune("softmax_attention", **PROBLEM, candidates=[dict(block_q=48)], timer=lambda run, sizes: 1.0)
    assert result.best is None and result.entry is None
    assert json.loads(user.read_text())["entries"] == {}


def test_rerun_skips_a_measured_problem_unless_retuned(caches):
    _, user = caches
    timer, timed = timer_by_block_q({None: 1.0})
    first = autotune("softmax_attention", **PROBLEM, candidates=[{}], backward=True, timer=timer)
    assert first.entry["mode"] == "forward+backward" and len(timed) == 1
    again = autotune("softmax_attention", **PROBLEM, candidates=[{}], retune=False, timer=timer)
    assert again.cached and again.measurements == () and again.entry == first.entry and len(timed) == 1


def test_refuses_unknown_ops_and_backward_without_kernels(caches):
    with pytest.raises(ValueError, match="`op` must be one of"):
        autotune("softmax", **PROBLEM)
    with pytest.raises(ValueError, match="backward does not run its kernels"):
        autotune("lmul_dot_general", **PROBLEM, backward=True)

"""experiments.autotune end to end on a tiny shape in the interpreter: a progress line per candidate,
the summary table, the cache written, and a rerun that skips what is measured."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
KEY = "cpu | softmax_attention | float32 | batch_heads=1,head_dim=16,keys=32,queries=32,value_dim=16"


def run_autotune(cache_path, *flags):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXATTN_AUTOTUNE_CACHE="")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.autotune", "--interpret_pallas", "--ops=softmax_attention",
         "--lengths=20", "--head_dims=16", "--dtypes=float32", "--batch=1", "--heads=1", "--repeats=1",
         "--warmup=0", "--max_candidates=2", f"--cache={cache_path}", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_entry_point_tunes_writes_and_skips_measured_problems(tmp_path):
    cache_path = tmp_path / "autotune.json"
    out = run_autotune(cache_path)
    assert f"{KEY} [1/2] defaults:" in out and f"{KEY} [2/2] block_q=32 block_k=32 num_warps=4 num_stages=1:" in out
    assert out.count(" ok\n") == 2
    assert "| softmax_attention | float32 | batch_heads=1,head_dim=16,keys=32,queries=32,value_dim=16 |" in out
    entry = json.loads(cache_path.read_text())["entries"][KEY]
    assert entry["family"] == "FlashBlockSizes" and entry["candidates"] == 2 and entry["rejected"] == 0
    again = run_autotune(cache_path)
    assert f"{KEY}: in {cache_path}, skipped" in again and "[1/2]" not in again and "(cached)" in again
    assert json.loads(cache_path.read_text())["entries"][KEY] == entry

"""experiments.bench_sequence_parallel on tiny sizes: LASP-2 moves the same bytes at every T, the
K, V gather grows with T."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_communication_table(tmp_path):
    shards, heads, dim = 2, 2, 4
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench_sequence_parallel", "--lengths=32,128", f"--shards={shards}",
         f"--heads={heads}", f"--head_dim={dim}", f"--out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {(r["method"], r["length"]): r for r in json.loads((tmp_path / "communication.json").read_text())["rows"]}
    # One all-gather of every shard's fp32 [H, K, V] state and [H] decay; a device receives the others'.
    state_bytes = 4 * shards * (heads * dim * dim + heads) * (shards - 1) / shards
    for length in (32, 128):
        assert rows["lasp2", length]["forward"]["bytes_per_device"] == state_bytes
        assert rows["lasp2", length]["forward"]["collectives"] == [f"all-gather f32[{shards},1,{heads * dim * dim + heads}]"]
        # K and V [T, H, D] and the gates [T, H], fp32, all but the own shard.
        kv_bytes = 4 * length * (2 * heads * dim + heads) * (shards - 1) / shards
        assert rows["gather_kv", length]["forward"]["bytes_per_device"] == kv_bytes
    assert (tmp_path / "communication.png").stat().st_size > 0
    assert "| 128 |" in (tmp_path / "communication.md").read_text()

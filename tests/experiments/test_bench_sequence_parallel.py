"""experiments.bench_sequence_parallel on tiny sizes: LASP-2 moves the same bytes at every T, the
K, V gather grows with T; LASP-2H's softmax layer moves K and V once each way."""

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


def test_softmax_communication_table(tmp_path):
    """--layer=softmax_attention: LASP-2H receives the others' K and V, 2 B T H D fp32 numbers times
    (P - 1) / P, in one all-gather; its backward adds one reduce-scatter of the same volume."""
    shards, heads, dim = 2, 2, 4
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench_sequence_parallel", "--layer=softmax_attention", "--lengths=32,128",
         f"--shards={shards}", f"--heads={heads}", f"--head_dim={dim}", f"--out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "communication.json").exists()
    output = json.loads((tmp_path / "communication_softmax.json").read_text())
    rows = {(r["method"], r["length"]): r for r in output["rows"]}
    assert {method for method, _ in rows} == {"lasp2h", "gspmd"}
    for length in (32, 128):
        kv_bytes = 4 * 2 * length * heads * dim * (shards - 1) / shards
        lasp2h = rows["lasp2h", length]
        assert lasp2h["forward"]["bytes_per_device"] == kv_bytes
        assert lasp2h["forward"]["collectives"] == [f"all-gather f32[1,{length},{heads},{2 * dim}]"]
        assert lasp2h["forward_backward"]["bytes_per_device"] == 2 * kv_bytes
        assert sorted(lasp2h["forward_backward"]["collectives"]) == [
            f"all-gather f32[1,{length},{heads},{2 * dim}]",
            f"reduce-scatter f32[1,{length // shards},{heads},{2 * dim}]",
        ]
        assert rows["gspmd", length]["forward"]["bytes_per_device"] > 0
    assert (tmp_path / "communication_softmax.png").stat().st_size > 0
    table = (tmp_path / "communication_softmax.md").read_text()
    assert "| 128 |" in table and "LASP-2H" in table

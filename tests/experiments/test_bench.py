"""experiments.bench end to end on tiny sizes: every op and impl measured, files written."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_bench_writes_json_markdown_and_plot(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--ops=linear_attention,softmax_attention,diagonal_scan",
         "--impls=xla,reference", "--lengths=32,64", "--heads=2", "--head_dim=8", "--repeats=1",
         f"--out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["device"].startswith("cpu") and report["matmul_gflops"] > 0
    measured = {(r["op"], r["impl"], r["length"]) for r in report["rows"] if not r["skipped"]}
    assert measured == {(op, impl, t) for op in ("linear_attention", "softmax_attention", "diagonal_scan")
                        for impl in ("xla", "reference") for t in (32, 64)}
    for row in report["rows"]:
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0
        assert abs(row["tokens_per_s"] - row["length"] / (row["forward_ms"] / 1e3)) < 1e-6 * row["tokens_per_s"]
    assert "| linear_attention | xla | 64 |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").stat().st_size > 5_000

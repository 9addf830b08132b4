"""experiments.bench end to end on tiny sizes: every op and impl measured, files written."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
OPS = ("linear_attention", "softmax_attention", "diagonal_scan")


def run_bench(tmp_path, *flags, lengths="32,64", ops=OPS):
    """Runs ``python -m experiments.bench`` on ``ops`` at ``lengths`` (2 heads, one repeat) with
    ``flags``, writing to ``tmp_path``; returns its JSON report."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench", f"--ops={','.join(ops)}", f"--lengths={lengths}", "--heads=2",
         "--repeats=1", f"--out_dir={tmp_path}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "bench.json").read_text())


@pytest.mark.slow
def test_bench_measures_every_op_impl_dtype_and_head_size(tmp_path):
    report = run_bench(tmp_path, "--impls=xla,pallas,reference", "--head_dims=8,16", "--dtypes=float32,bfloat16",
                       "--interpret_pallas", lengths="64")
    assert report["device"].startswith("cpu") and report["bandwidth_gbs"] > 0
    assert set(report["matmul_gflops"]) == {"float32", "bfloat16"} and min(report["matmul_gflops"].values()) > 0
    measured = {(r["op"], r["impl"], r["dtype"], r["head_dim"], r["length"]) for r in report["rows"] if not r["skipped"]}
    assert measured == {(op, impl, dtype, d, t) for op in OPS for impl in ("xla", "pallas", "reference")
                        for dtype in ("float32", "bfloat16") for d in (8, 16) for t in (64,)}
    for row in report["rows"]:
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0
        assert row["forward_peak_bytes"] > 0 and row["forward_backward_peak_bytes"] > 0
        assert abs(row["tokens_per_s"] - row["length"] / (row["forward_ms"] / 1e3)) < 1e-6 * row["tokens_per_s"]
        bandwidth = row["forward_gbytes_per_s"] / report["bandwidth_gbs"]
        assert abs(row["forward_fraction_of_bandwidth"] - bandwidth) < 1e-9
    markdown = (tmp_path / "bench.md").read_text()
    assert "| linear_attention | xla | float32 | 8 | 64 |" in markdown
    assert "| softmax_attention | bfloat16 | 16 | 64 |" in markdown  # a row of the xla / pallas table
    assert (tmp_path / "bench.png").stat().st_size > 5_000


@pytest.mark.slow
def test_bench_times_the_delta_rule_beside_linear_attention(tmp_path):
    """DeltaNet and gated DeltaProduct rows: xla (chunked), pallas (interpreted) and reference (token
    loop), forward and forward + backward, with FLOPs counted per delta step by the chunked form's
    formula; fla's rows say why they are skipped on a machine without a GPU."""
    from experiments.bench_cases import delta_rule_chunk

    ops = ("delta_rule", "gated_delta_product", "linear_attention", "gated_linear_attention", "softmax_attention")
    peers = ("pallas_mosaic", "pallas_triton", "jax_mgpu", "jax_triton", "tokamax", "tokamax_triton")
    report = run_bench(tmp_path, f"--impls=xla,pallas,reference,fla,{','.join(peers)}", "--head_dims=8",
                       "--interpret_pallas", lengths="80", ops=ops)
    rows = {(r["op"], r["impl"]): r for r in report["rows"]}
    impls = ("xla", "pallas", "reference")
    assert set(rows) == ({(op, impl) for op in ops for impl in impls} | {(op, "fla") for op in ops[:4]}
                         | {("softmax_attention", peer) for peer in peers})
    # peers that need a GPU, Hopper or a package say so on this CPU machine (fla: fla-core, torch or CUDA)
    assert all(rows[op, "fla"]["skipped"].startswith("needs") for op in ops[:4])
    reasons = {peer: rows["softmax_attention", peer]["skipped"] for peer in peers}
    assert reasons["pallas_triton"] == reasons["jax_triton"] == "needs a CUDA GPU"
    assert reasons["pallas_mosaic"] == reasons["jax_mgpu"] == "needs a CUDA GPU with compute capability >= 9.0 (Hopper)"
    tokamax_reason = "needs tokamax (pip install tokamax)" if importlib.util.find_spec("tokamax") is None else "needs a CUDA GPU"
    assert reasons["tokamax_triton"] == tokamax_reason and reasons["tokamax"].startswith(tokamax_reason)
    assert report["rows"][0]["batch"] == 1 and report["rows"][0]["heads"] == 2
    for impl in impls:
        assert not rows["gated_linear_attention", impl]["skipped"]
        assert rows["gated_linear_attention", impl]["forward_backward_ms"] > 0
    c, d = delta_rule_chunk(), 8
    for op, steps in (("delta_rule", 1), ("gated_delta_product", 2)):
        assert rows[op, "fla"]["skipped"].startswith("needs")
        for impl in impls:
            row = rows[op, impl]
            assert not row["skipped"] and row["forward_ms"] > 0 and row["forward_backward_ms"] > 0
            flops = 2 * 80 * steps * 2 * (5 * c * d + c * c / 3 + 3 * d * d)  # T = 80, H = 2
            assert abs(row["forward_gflops"] - flops / (row["forward_ms"] / 1e3) / 1e9) < 1e-6 * row["forward_gflops"]
    markdown = (tmp_path / "bench.md").read_text()
    assert "| delta_rule | xla | float32 | 8 | 80 | 1x2 |" in markdown
    assert "| gated_delta_product | float32 | 8 | 80 | 1x2 |" in markdown  # a row of the xla / pallas table
    assert "| softmax_attention | jax_mgpu | float32 | 8 | 80 | 1x2 | skipped: needs a CUDA GPU" in markdown


def test_bench_skips_pallas_on_cpu_without_the_interpreter_flag(tmp_path):
    report = run_bench(tmp_path, "--impls=pallas", "--head_dims=8")
    assert report["rows"] and all(r["skipped"] == "Pallas runs only interpreted on CPU" for r in report["rows"])


def test_bench_puts_lmul_matmul_beside_the_native_matmul(tmp_path):
    rows = run_bench(tmp_path, "--impls=native,formula,bitwise", "--head_dims=8", lengths="32",
                     ops=("lmul_matmul",))["rows"]
    assert {r["impl"] for r in rows if not r["skipped"]} == {"native", "formula", "bitwise"}
    assert "L-Matmul time relative to the native matmul" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_bench_times_tensor_attention_and_its_low_rank_path(tmp_path):
    rows = run_bench(tmp_path, "--impls=xla,reference,degree1,degree2", "--head_dims=4", "--nobackward",
                     lengths="16,24", ops=("tensor_attention", "tensor_attention_poly"))["rows"]
    measured = {(r["op"], r["impl"], r["length"]) for r in rows if not r["skipped"]}
    assert measured == {(op, impl, t) for op, impls in (("tensor_attention", ("xla", "reference")),
                                                        ("tensor_attention_poly", ("degree1", "degree2")))
                        for impl in impls for t in (16, 24)}
    for row in rows:
        assert row["forward_ms"] > 0 and row["forward_peak_bytes"] > 0 and row["forward_backward_ms"] is None
        if row["op"] == "tensor_attention_poly":  # rank C(4 + g, g): 5 and 15
            rank = {"degree1": 5, "degree2": 15}[row["impl"]]
            flops = 6.0 * 2 * row["length"] * rank * 5
            assert abs(row["forward_gflops"] - flops / (row["forward_ms"] / 1e3) / 1e9) < 1e-6 * row["forward_gflops"]


@pytest.mark.slow
def test_bench_puts_the_ssm_convolutions_beside_their_scans(tmp_path):
    rows = run_bench(tmp_path, "--impls=s4d_fft,s4d_scan,s4_fft,s5_scan", "--head_dims=4", lengths="32",
                     ops=("ssm_layer",))["rows"]
    assert {r["impl"] for r in rows if not r["skipped"]} == {"s4d_fft", "s4d_scan", "s4_fft", "s5_scan"}
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 for r in rows)


def test_peak_memory_counts_the_temporaries():
    """The reference tensor attention keeps [B, H, T, T, T] fp32 logits: at T=64, H=2 that is 2 MiB."""
    import jax
    import jax.numpy as jnp

    from experiments.bench import _peak_bytes
    from jaxattn.ops import tensor_attention

    x = jnp.ones((1, 64, 2, 8))
    peak = _peak_bytes(jax.jit(lambda *a: tensor_attention(*a, causal=False, impl="reference")), [x] * 5)
    assert peak >= 4 * 2 * 64**3


def test_peers_preset_expands_to_the_side_by_side_rows():
    """The preset's groups in run order (cheapest first) and their rows: flash with every peer at B=1 H=16,
    linear attention plain and gated with fla at two sizes, the scan, and fp32 flash and tensor attention."""
    from experiments.bench_cases import CASES
    from experiments.bench_presets import expand, rows

    groups = expand("peers")
    assert [g.name for g in groups] == ["scan", "linear_small", "linear_large", "flash", "fp32_flash", "fp32_tensor"]
    expanded = rows(groups)
    assert all(impl in CASES[op].impls for op, impl, *_ in expanded)  # every impl named is one the op has
    flash = {(impl, d, t, b, h) for op, impl, dtype, d, t, b, h in expanded
             if op == "softmax_attention" and dtype == "bfloat16"}
    peers = {"xla", "cudnn", "pallas_mosaic", "pallas_triton", "jax_mgpu", "jax_triton", "tokamax", "tokamax_triton"}
    assert flash == {(impl, 128, t, 1, 16) for impl in peers for t in (4096, 16384)}
    linear = {(op, impl, b, h) for op, impl, dtype, d, t, b, h in expanded if "linear" in op}
    assert linear == {(op, impl, b, h) for op in ("linear_attention", "gated_linear_attention")
                      for impl in ("xla", "pallas", "fla") for b, h in ((2, 8), (8, 16))}
    assert {(op, impl, dtype) for op, impl, dtype, *_ in expanded if dtype == "float32"} == {
        (op, impl, "float32") for op in ("softmax_attention", "tensor_attention") for impl in ("xla", "pallas")}
    assert {impl for op, impl, *_ in expanded if op == "diagonal_scan"} == {"xla", "pallas"}
    assert [g.name for g in expand("peers", ("flash", "scan"))] == ["scan", "flash"]
    with pytest.raises(ValueError, match="no groups"):
        expand("peers", ("nope",))


def test_markdown_divides_each_row_by_the_best_peer_of_its_group(tmp_path):
    from experiments.bench_report import write_markdown

    def row(impl, forward, both, batch=1):
        return dict(op="softmax_attention", impl=impl, dtype="bfloat16", head_dim=128, length=4096, batch=batch,
                    heads=16, skipped="", forward_ms=forward, forward_backward_ms=both, forward_peak_bytes=-1,
                    forward_backward_peak_bytes=-1, tokens_per_s=1.0, forward_gflops=1.0, forward_fraction_of_matmul=0.5,
                    forward_gbytes_per_s=1.0, forward_fraction_of_bandwidth=0.5)

    rows = [row("pallas_mosaic", 3.0, 12.0), row("cudnn", 2.0, None), row("jax_triton", 4.0, 8.0),
            row("pallas_triton", 3.0, 12.0, batch=2)]  # another group (B=2): no peer measured there
    result = dict(device="gpu:test", jax="0", batch=1, heads=16, preset="peers", matmul_gflops={"bfloat16": 1.0},
                  bandwidth_gbs=1.0, rows=rows)
    write_markdown(result, tmp_path / "bench.md")
    lines = (tmp_path / "bench.md").read_text().splitlines()
    assert next(x for x in lines if "| pallas_mosaic |" in x).endswith("| 1.50 / 1.50 |")  # 3 / 2, 12 / 8
    assert next(x for x in lines if "| cudnn |" in x).endswith("| 1.00 / - |")
    other_group = next(x for x in lines if "| pallas_triton |" in x)
    assert "| 4096 | 2x16 |" in other_group and other_group.endswith("| - |")


def test_gpu_kernel_family_is_set_only_while_a_row_is_measured(monkeypatch):
    import os

    from experiments.bench_attention_peers import gpu_kernel_family
    from pallas_kernels.platform import GPU_KERNELS_ENV

    monkeypatch.delenv(GPU_KERNELS_ENV, raising=False)
    with gpu_kernel_family("pallas_mosaic"):
        assert os.environ[GPU_KERNELS_ENV] == "mosaic"
    with gpu_kernel_family("pallas_triton"):
        assert os.environ[GPU_KERNELS_ENV] == "triton"
    with gpu_kernel_family("xla"):
        assert GPU_KERNELS_ENV not in os.environ
    assert GPU_KERNELS_ENV not in os.environ

"""Benchmark every op and implementation over sequence lengths, head sizes and dtypes.

    python -m experiments.bench --ops=linear_attention,softmax_attention,diagonal_scan \\
        --impls=xla,pallas --lengths=1024,4096,16384 --head_dims=64,128 --dtypes=float32,bfloat16

For each (op, impl, dtype, D, T): forward and forward+backward wall time (median of ``--repeats``
after a warm-up), the compiled programs' peak memory, tokens/s, and achieved FLOP/s and bytes/s as
fractions of the dense-matmul FLOP/s and the copy bandwidth measured in the same run on the same
device (the roofline). A second table puts xla/pallas time ratios side by side. Writes
``bench.json``, ``bench.md`` and ``bench.png`` to ``--out_dir``.

On CPU the Pallas kernels run only in the interpreter, which says nothing about their speed:
pallas rows are skipped there unless ``--interpret_pallas``. Peer kernels that need a CUDA GPU, a Hopper
GPU or a package that is not installed give skipped rows that say so.

``--preset=peers`` replaces the sweep flags by the groups of :mod:`experiments.bench_presets` (our
kernels beside every peer on the GPU; ``--preset_groups`` picks some); the files are rewritten after
every group, so a run cut short keeps what it measured.
"""

import dataclasses
import platform

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from experiments import bench_attention_peers, bench_presets
from experiments.bench_cases import CASES, Shape
from experiments.bench_report import write_markdown, write_plot
from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from jaxattn.timing import median_seconds
from pallas_kernels import triton_raw

_OPS = flags.DEFINE_list("ops", list(CASES), "Ops to benchmark.")
_IMPLS = flags.DEFINE_list(
    "impls", ["xla", "pallas", "triton", "cudnn", "native", "formula", "bitwise"],
    "Implementations: xla, pallas, reference; vendor kernels: triton (raw Triton linear attention through "
    "jax-triton), cudnn (jax.nn.dot_product_attention(implementation='cudnn')); peers outside JAX: fla "
    "(flash-linear-attention's chunk kernels for the delta rule and linear attention ops, PyTorch on a GPU, bf16); for "
    "softmax_attention: pallas_mosaic / pallas_triton (ours with JAXATTN_GPU_KERNELS=mosaic / triton), jax_mgpu / "
    "jax_triton (jax.experimental.pallas.ops.gpu's Mosaic GPU and Triton kernels), tokamax / tokamax_triton "
    "(tokamax.dot_product_attention, implementation mosaic / triton); for lmul_matmul: native (the "
    "device's matmul), formula, bitwise (XLA) and pallas; for tensor_attention_poly: degree1, degree2, degree3 "
    "(the low-rank path's polynomial degree); for ssm_layer: s4d_fft, s4d_scan, s4_fft, s5_scan (a layer by FFT "
    "convolution or by the recurrence's scan). Each op runs the ones it has.",
)
_LENGTHS = flags.DEFINE_list("lengths", ["1024", "4096", "16384"], "Sequence lengths T.")
_BATCH = flags.DEFINE_integer("batch", 1, "Batch size B.")
_HEADS = flags.DEFINE_integer("heads", 4, "Heads H (features for diagonal_scan: H * D).")
_HEAD_DIMS = flags.DEFINE_list("head_dims", ["64"], "Head sizes D (K = V = D).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Input dtypes (float32, bfloat16).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (median reported).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 20.0, "Skip larger T for a case once one call takes longer.")
_MEMORY_GB = flags.DEFINE_float("memory_budget_gb", 12.0, "Skip a measurement whose estimated working set exceeds this.")
_BACKWARD = flags.DEFINE_bool("backward", True, "Also time forward + backward (--nobackward: forward only).")
_INTERPRET_PALLAS = flags.DEFINE_bool("interpret_pallas", False, "Time the Pallas interpreter on CPU (slow; for tests).")
_PRESET = flags.DEFINE_string("preset", "", "A named set of groups (experiments.bench_presets: peers) in place of "
                               "--ops, --impls, --lengths, --batch, --heads, --head_dims and --dtypes.")
_PRESET_GROUPS = flags.DEFINE_list("preset_groups", [], "Only these groups of --preset (default: all).")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/bench", "Where bench.json / .md / .png go.")


def _peak_bytes(fn, args) -> int:
    """Peak memory of the compiled program from XLA's buffer assignment: the larger of its peak and
    arguments + outputs + temporaries (XLA:CPU's ``peak_memory_in_bytes`` leaves the temporaries out)."""
    stats = fn.lower(*args).compile().memory_analysis()
    if stats is None:
        return -1
    buffers = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    return int(max(getattr(stats, "peak_memory_in_bytes", 0) or 0, buffers - stats.alias_size_in_bytes))


def _on_accelerator() -> bool:
    return jax.default_backend() != "cpu"


def dense_matmul_gflops(dtype: str, size: int = 0, repeats: int = 5) -> float:
    """Achieved GFLOP/s of one ``size x size`` matmul in ``dtype`` (default precision) on this device;
    ``size`` 0: 2048 on CPU, 8192 on an accelerator (a 2048 product is too short to fill a GPU)."""
    size = size or (8192 if _on_accelerator() else 2048)
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    seconds = median_seconds(jax.jit(lambda a: a @ a), a, repeats=repeats)
    return 2 * size**3 / seconds / 1e9


def copy_bandwidth_gbs(megabytes: int = 0, repeats: int = 5) -> float:
    """Achieved GB/s (read + write) of ``y = x + 1`` over an fp32 array of ``megabytes`` (0: 256 on
    CPU, 2048 on an accelerator, well past its caches)."""
    megabytes = megabytes or (2048 if _on_accelerator() else 256)
    x = jnp.zeros((megabytes * 2**18,), jnp.float32)
    seconds = median_seconds(jax.jit(lambda x: x + 1), x, repeats=repeats)
    return 2 * x.nbytes / seconds / 1e9


def _forward_backward(fn, num_args: int):
    """Jitted gradient of ``sum(fn(*args))`` with respect to every input."""

    def loss(*args):
        return jnp.sum(fn(*args).astype(jnp.float32))

    return jax.jit(jax.grad(loss, argnums=tuple(range(num_args))))


def _skip_reason(op: str, impl: str, shape: Shape, slow: bool) -> str:
    case = CASES[op]
    if impl not in case.impls:
        return "not an impl of this op"
    if impl == "pallas" and jax.default_backend() == "cpu" and not _INTERPRET_PALLAS.value:
        return "Pallas runs only interpreted on CPU"
    if impl == "triton" and not triton_raw.available():
        return "needs jax-triton and a CUDA GPU"
    if impl == "cudnn" and (jax.default_backend() != "gpu" or shape.dtype == "float32"):
        return "needs a CUDA GPU and fp16/bf16"
    if impl in bench_attention_peers.IMPLS and bench_attention_peers.skip_reason(impl, shape.dtype, shape.head_dim):
        return bench_attention_peers.skip_reason(impl, shape.dtype, shape.head_dim)
    if impl in case.peers and case.peers[impl].skip_reason(shape):
        return case.peers[impl].skip_reason(shape)
    if slow:
        return "time budget"
    if case.working_set_bytes(shape, impl) > _MEMORY_GB.value * 2**30:
        return "memory budget"
    return ""


def _measure_times(case, impl: str, shape: Shape) -> dict:
    """Forward (and forward + backward) milliseconds and peak bytes (-1: not known, for peers)."""
    backward = _BACKWARD.value and impl not in case.forward_only_impls
    backward = backward and 2 * case.working_set_bytes(shape, impl) <= _MEMORY_GB.value * 2**30
    if impl in case.peers:
        forward, both = case.peers[impl].time(shape, _REPEATS.value, backward)
        return dict(forward_ms=1e3 * forward, forward_peak_bytes=-1, forward_backward_peak_bytes=None if both is None else -1,
                    forward_backward_ms=None if both is None else 1e3 * both)
    with bench_attention_peers.gpu_kernel_family(impl):
        return _measure_jax_times(case, impl, shape, backward)


def _measure_jax_times(case, impl: str, shape: Shape, backward: bool) -> dict:
    """A JAX impl's times and the compiled programs' peak bytes (traced here, under its GPU kernel family)."""
    args = case.make_inputs(shape)
    fn = jax.jit(case.run(impl))
    row = dict(forward_ms=1e3 * median_seconds(fn, *args, repeats=_REPEATS.value), forward_peak_bytes=_peak_bytes(fn, args),
               forward_backward_ms=None, forward_backward_peak_bytes=None)
    if backward:
        grad_fn = _forward_backward(case.run(impl), len(args))
        row["forward_backward_ms"] = 1e3 * median_seconds(grad_fn, *args, repeats=_REPEATS.value)
        row["forward_backward_peak_bytes"] = _peak_bytes(grad_fn, args)
    return row


def measure(op: str, impl: str, shape: Shape, peaks: dict) -> dict:
    case = CASES[op]
    row = _measure_times(case, impl, shape)
    forward = row["forward_ms"] / 1e3
    flops, moved = case.forward_flops(shape, impl), case.forward_bytes(shape)
    row.update(
        tokens_per_s=shape.batch * shape.length / forward,
        forward_gflops=flops / forward / 1e9,
        forward_fraction_of_matmul=flops / forward / 1e9 / peaks["matmul_gflops"][shape.dtype],
        forward_gbytes_per_s=moved / forward / 1e9,
        forward_fraction_of_bandwidth=moved / forward / 1e9 / peaks["bandwidth_gbs"],
    )
    return row


def _groups() -> tuple[bench_presets.Group, ...]:
    """The preset's groups, or one group from the sweep flags."""
    if _PRESET.value:
        try:
            return bench_presets.expand(_PRESET.value, tuple(_PRESET_GROUPS.value))
        except ValueError as error:
            raise app.UsageError(f"--preset: {error}") from error
    for op in _OPS.value:
        if op not in CASES:
            raise app.UsageError(f"--ops: {op!r} is not one of {sorted(CASES)}")
    return (bench_presets.Group("flags", tuple(_OPS.value), tuple(_IMPLS.value), tuple(map(int, _LENGTHS.value)),
                                _BATCH.value, _HEADS.value, tuple(map(int, _HEAD_DIMS.value)), tuple(_DTYPES.value)),)


def _measure_group(group: bench_presets.Group, peaks: dict) -> list[dict]:
    """The rows of one group: measured, skipped with the reason, or failed with the error."""
    rows = []
    for op in group.ops:
        for impl in group.impls:
            for dtype in group.dtypes:
                for head_dim in group.head_dims:
                    slow = False
                    for length in group.lengths:
                        shape = Shape(group.batch, group.heads, head_dim, length, dtype)
                        key = dict(op=op, impl=impl, dtype=dtype, head_dim=head_dim, length=length,
                                   batch=group.batch, heads=group.heads)
                        reason = _skip_reason(op, impl, shape, slow)
                        if reason == "not an impl of this op":
                            continue
                        if reason:
                            rows.append(dict(key, skipped=reason))
                            continue
                        try:
                            row = dict(key, skipped="", **measure(op, impl, shape, peaks))
                        except Exception as error:  # a kernel that fails to compile or run is a result too
                            logging.exception("%s/%s %s D=%d T=%d failed", op, impl, dtype, head_dim, length)
                            message = (str(error).strip().splitlines() or [""])[0][:200].replace("|", "/")
                            rows.append(dict(key, skipped=f"failed: {type(error).__name__}: {message}"))
                            continue
                        rows.append(row)
                        logging.info("%s/%s %s B=%d H=%d D=%d T=%d: forward %.2f ms (%.0f%% of matmul, %.0f%% of "
                                     "bandwidth), fwd+bwd %s ms", op, impl, dtype, group.batch, group.heads, head_dim,
                                     length, row["forward_ms"], 100 * row["forward_fraction_of_matmul"],
                                     100 * row["forward_fraction_of_bandwidth"],
                                     "-" if row["forward_backward_ms"] is None else f"{row['forward_backward_ms']:.2f}")
                        slow = max(row["forward_ms"], row["forward_backward_ms"] or 0.0) / 1e3 > _MAX_SECONDS.value
    return rows


def run_benchmarks(on_group=lambda result: None) -> dict:
    """Every group's rows; ``on_group(result so far)`` after each group (to write the files as it goes)."""
    groups = _groups()
    device = jax.devices()[0]
    dtypes = list(dict.fromkeys(dtype for group in groups for dtype in group.dtypes))
    peaks = dict(matmul_gflops={dtype: dense_matmul_gflops(dtype) for dtype in dtypes},
                 bandwidth_gbs=copy_bandwidth_gbs())
    logging.info("Device %s: dense matmul %s GFLOP/s, copy %.1f GB/s", device.device_kind,
                 {d: round(g, 1) for d, g in peaks["matmul_gflops"].items()}, peaks["bandwidth_gbs"])
    result = dict(
        device=f"{device.platform}:{device.device_kind}", host=platform.node(), jax=jax.__version__,
        batch=_BATCH.value, heads=_HEADS.value, preset=_PRESET.value,
        groups=[dataclasses.asdict(group) for group in groups], **peaks, rows=[],
    )
    for group in groups:
        result["rows"] += _measure_group(group, peaks)
        on_group(result)
    return result


def main(argv):
    start_main(argv)
    run_benchmarks(lambda result: write_outputs(result, _OUT_DIR.value, "bench", write_markdown, write_plot))


if __name__ == "__main__":
    app.run(main)

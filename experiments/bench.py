"""Benchmark every op and implementation over a sweep of sequence lengths.

    python -m experiments.bench --ops=linear_attention,softmax_attention --lengths=1024,4096,16384

For each (op, impl, T): forward and forward+backward wall time (median of ``--repeats`` after a
warm-up), tokens/s, and achieved GFLOP/s next to the dense-matmul GFLOP/s measured in the same
run on the same device. Writes ``bench.json``, ``bench.md`` and ``bench.png`` to ``--out_dir``.
"""

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments.logging_setup import show_own_info_only

from jaxattn.ops import diagonal_scan, linear_attention, softmax_attention

_OPS = flags.DEFINE_list("ops", ["linear_attention", "softmax_attention", "diagonal_scan"], "Ops to benchmark.")
_IMPLS = flags.DEFINE_list("impls", ["xla", "reference"], "Implementations to benchmark.")
_LENGTHS = flags.DEFINE_list("lengths", ["1024", "4096", "16384"], "Sequence lengths T.")
_BATCH = flags.DEFINE_integer("batch", 1, "Batch size B.")
_HEADS = flags.DEFINE_integer("heads", 4, "Heads H (features for diagonal_scan: H * head_dim).")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 64, "Head size D (K = V = D).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Input dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (median reported).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 20.0, "Skip larger T for a case once one call takes longer.")
_MEMORY_GB = flags.DEFINE_float("memory_budget_gb", 12.0, "Skip a measurement whose estimated working set exceeds this.")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/bench", "Where bench.json / .md / .png go.")


@dataclasses.dataclass(frozen=True)
class Case:
    """One op: inputs for a length, the function per impl, the forward FLOP count, and the bytes of
    its largest intermediate (quadratic ops keep ``[B, H, T, T]`` scores; backward about twice)."""

    make_inputs: Callable[[int], tuple]
    run: Callable[[str], Callable]
    forward_flops: Callable[[int], float]
    impls: tuple[str, ...]
    working_set_bytes: Callable[[int], float] = lambda length: 0.0


def _qkv(length: int):
    keys = jax.random.split(jax.random.key(0), 3)
    shape = (_BATCH.value, length, _HEADS.value, _HEAD_DIM.value)
    return tuple(jax.random.normal(key, shape, _DTYPE.value) for key in keys)


def _linear_attention_flops(length: int, chunk_size: int = 64) -> float:
    """Chunked algorithm: per token and head 2C(K+V) (intra) + 2KV (chunk state) + 2KV (inter)."""
    d = _HEAD_DIM.value
    return _BATCH.value * _HEADS.value * length * (2 * chunk_size * 2 * d + 4 * d * d)


def _softmax_flops(length: int) -> float:
    """Causal: half of ``2 T^2 (K + V)`` per head."""
    return _BATCH.value * _HEADS.value * length * length * 2 * _HEAD_DIM.value


def _scan_inputs(length: int):
    features = _HEADS.value * _HEAD_DIM.value
    a = jax.random.uniform(jax.random.key(0), (_BATCH.value, length, features), minval=0.5, maxval=0.99)
    b = jax.random.normal(jax.random.key(1), (_BATCH.value, length, features))
    return a.astype(_DTYPE.value), b.astype(_DTYPE.value)


CASES = {
    "linear_attention": Case(
        _qkv, lambda impl: lambda q, k, v: linear_attention(q, k, v, impl=impl), _linear_attention_flops, ("xla", "reference")
    ),
    "softmax_attention": Case(
        _qkv, lambda impl: lambda q, k, v: softmax_attention(q, k, v, impl=impl), _softmax_flops, ("xla", "reference"),
        working_set_bytes=lambda length: 2 * 4.0 * _BATCH.value * _HEADS.value * length**2,
    ),
    "diagonal_scan": Case(
        _scan_inputs,
        lambda impl: lambda a, b: diagonal_scan(a, b, impl=impl)[0],
        lambda length: 2.0 * _BATCH.value * length * _HEADS.value * _HEAD_DIM.value,
        ("xla", "reference"),
    ),
}


def _median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def dense_matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of one ``size x size`` matmul in the benchmark dtype on this device."""
    a = jax.random.normal(jax.random.key(0), (size, size), _DTYPE.value)
    seconds = _median_seconds(jax.jit(lambda a: a @ a), (a,), repeats)
    return 2 * size**3 / seconds / 1e9


def _forward_backward(fn, num_args: int):
    """Jitted gradient of ``sum(fn(*args))`` with respect to every input."""

    def loss(*args):
        return jnp.sum(fn(*args).astype(jnp.float32))

    return jax.jit(jax.grad(loss, argnums=tuple(range(num_args))))


def run_benchmarks() -> dict:
    device = jax.devices()[0]
    matmul = dense_matmul_gflops()
    logging.info("Device %s: dense matmul %.1f GFLOP/s (%s)", device.device_kind, matmul, _DTYPE.value)
    rows = []
    for op in _OPS.value:
        if op not in CASES:
            raise app.UsageError(f"--ops: {op!r} is not one of {sorted(CASES)}")
        case = CASES[op]
        for impl in (i for i in _IMPLS.value if i in case.impls):
            too_slow = False
            for length in map(int, _LENGTHS.value):
                if too_slow:
                    rows.append(dict(op=op, impl=impl, length=length, skipped=True))
                    continue
                budget = _MEMORY_GB.value * 2**30
                if case.working_set_bytes(length) > budget:
                    rows.append(dict(op=op, impl=impl, length=length, skipped=True))
                    continue
                args = case.make_inputs(length)
                fn = case.run(impl)
                forward = _median_seconds(jax.jit(fn), args, _REPEATS.value)
                backward = None  # skipped: over the memory budget
                if 2 * case.working_set_bytes(length) <= budget:
                    backward = _median_seconds(_forward_backward(fn, len(args)), args, _REPEATS.value)
                flops = case.forward_flops(length)
                row = dict(
                    op=op, impl=impl, length=length, skipped=False,
                    forward_ms=1e3 * forward, forward_backward_ms=None if backward is None else 1e3 * backward,
                    tokens_per_s=_BATCH.value * length / forward,
                    forward_gflops=flops / forward / 1e9,
                    forward_fraction_of_matmul=flops / forward / 1e9 / matmul,
                )
                rows.append(row)
                logging.info("%s/%s T=%d: forward %.2f ms (%.1f GFLOP/s, %.0f%% of matmul), fwd+bwd %s ms",
                             op, impl, length, row["forward_ms"], row["forward_gflops"],
                             100 * row["forward_fraction_of_matmul"], _format_ms(row["forward_backward_ms"]))
                too_slow = max(forward, backward or 0.0) > _MAX_SECONDS.value
    return dict(
        device=f"{device.platform}:{device.device_kind}", host=platform.node(), jax=jax.__version__,
        dtype=_DTYPE.value, batch=_BATCH.value, heads=_HEADS.value, head_dim=_HEAD_DIM.value,
        matmul_gflops=matmul, rows=rows,
    )


def _format_ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_markdown(result: dict, path: str) -> None:
    lines = [
        f"Device `{result['device']}`, jax {result['jax']}, {result['dtype']}, B={result['batch']}, "
        f"H={result['heads']}, D={result['head_dim']}; dense matmul {result['matmul_gflops']:.1f} GFLOP/s.",
        "",
        "| op | impl | T | forward ms | fwd+bwd ms | tokens/s | GFLOP/s | % of matmul |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["skipped"]:
            lines.append(f"| {r['op']} | {r['impl']} | {r['length']} | skipped (time or memory budget) | | | | |")
            continue
        lines.append(
            f"| {r['op']} | {r['impl']} | {r['length']} | {r['forward_ms']:.2f} | {_format_ms(r['forward_backward_ms'])} | "
            f"{r['tokens_per_s']:.3g} | {r['forward_gflops']:.1f} | {100 * r['forward_fraction_of_matmul']:.1f} |"
        )
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for op in dict.fromkeys(r["op"] for r in result["rows"]):
        for impl in dict.fromkeys(r["impl"] for r in result["rows"] if r["op"] == op):
            rows = [r for r in result["rows"] if r["op"] == op and r["impl"] == impl and not r["skipped"]]
            axis.plot([r["length"] for r in rows], [r["tokens_per_s"] for r in rows], "o-", label=f"{op} ({impl})")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("sequence length T")
    axis.set_ylabel("forward tokens / s")
    axis.set_title(f"{result['device']}, {result['dtype']}")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    show_own_info_only()
    result = run_benchmarks()
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUT_DIR.value, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    write_markdown(result, os.path.join(_OUT_DIR.value, "bench.md"))
    write_plot(result, os.path.join(_OUT_DIR.value, "bench.png"))
    with open(os.path.join(_OUT_DIR.value, "bench.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)

"""Bytes each device receives per sequence-parallel layer, against T: linear attention (LASP-2) or
softmax attention (LASP-2H's softmax layers).

    python -m experiments.bench_sequence_parallel --out_dir=results/sequence_parallel
    python -m experiments.bench_sequence_parallel --layer=softmax_attention --out_dir=results/sequence_parallel

``--layer=linear_attention`` (default) compiles one gated linear attention layer (q, k, v
``[B, T, H, D]``, the sequence split over ``--shards`` CPU devices) three ways and reads every
collective from the compiled HLO (:mod:`jaxattn.parallel.communication`):

* ``lasp2``: :func:`jaxattn.parallel.sequence.sequence_parallel_linear_attention`, one all-gather of
  each shard's ``[H, K, V]`` state and decay; size independent of T.
* ``gather_kv``: every device all-gathers K, V and the gates (as ring attention moves them, in one
  step instead of P - 1), then attends its own queries to the whole sequence.
* ``gspmd``: the single-device op on sequence-sharded inputs, left to XLA's partitioner.

``--layer=softmax_attention`` compiles one causal softmax attention layer two ways:

* ``lasp2h``: :func:`jaxattn.parallel.sequence.sequence_parallel_softmax_attention`, one all-gather
  of K and V packed, ``2 B T H D`` numbers of which a device receives ``(P - 1) / P``; its backward
  adds the transpose, a reduce-scatter of the same volume.
* ``gspmd``: ``softmax_attention(..., impl="xla")`` on sequence-sharded inputs and outputs, left to
  XLA's partitioner.

Forward and forward + backward. Writes ``communication.md``, ``.json`` and ``.png`` (linear
attention) or ``communication_softmax.*``. Compilation only: nothing runs, so the sizes are those
of the target layer whatever the host.
"""

import functools

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from jaxattn.ops import linear_attention, softmax_attention
from jaxattn.parallel import SEQUENCE_AXIS, communication
from jaxattn.parallel.sequence import sequence_parallel_linear_attention, sequence_parallel_softmax_attention
from jaxattn.train.plots import pyplot, save_figure

_LAYER = flags.DEFINE_enum("layer", "linear_attention", ["linear_attention", "softmax_attention"],
                           "Which layer's traffic to measure.")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/sequence_parallel",
                               "Where communication.md / .json / .png (softmax: communication_softmax.*) go.")
_LENGTHS = flags.DEFINE_list("lengths", None, "Sequence lengths T (default: 4096 ... 1048576 for linear attention, "
                                              "4096, 16384, 65536 for softmax attention).")
_SHARDS = flags.DEFINE_integer("shards", 8, "Sequence shards (fake CPU devices).")
_BATCH = flags.DEFINE_integer("batch", 1, "Sequences B.")
_HEADS = flags.DEFINE_integer("heads", 8, "Heads H.")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 64, "Key and value size per head (K = V = D).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["bfloat16", "float32"], "Dtype of q, k, v (XLA:CPU moves bf16 collectives as f32).")
_METHODS = {"linear_attention": ("lasp2", "gather_kv", "gspmd"), "softmax_attention": ("lasp2h", "gspmd")}
_DEFAULT_LENGTHS = {"linear_attention": (4096, 16384, 65536, 262144, 1048576),
                    "softmax_attention": (4096, 16384, 65536)}
_OUTPUT_NAME = {"linear_attention": "communication", "softmax_attention": "communication_softmax"}
_LABELS = {"lasp2": "LASP-2 (states)", "gather_kv": "all-gather K, V", "gspmd": "XLA partitioner",
           "lasp2h": "LASP-2H (all-gather K, V)"}


def _gather_kv_layer(q, k, v, g, *, mesh):
    """Each shard gathers all keys, values and gates, then runs its queries against them."""
    spec = PartitionSpec(None, SEQUENCE_AXIS)

    def shard(q, k, v, g):
        gather = functools.partial(jax.lax.all_gather, axis_name=SEQUENCE_AXIS, axis=1, tiled=True)
        k_all, v_all, g_all = gather(k), gather(v), gather(g)
        local = q.shape[1]
        me = jax.lax.axis_index(SEQUENCE_AXIS)
        # Queries see every key up to their own position: run the whole sequence with this shard's
        # queries in place (zeros elsewhere) and keep this shard's rows.
        q_all = jnp.zeros_like(k_all)
        q_all = jax.lax.dynamic_update_slice_in_dim(q_all, q, me * local, axis=1)
        o = linear_attention(q_all, k_all, v_all, g=g_all, impl="xla")
        return jax.lax.dynamic_slice_in_dim(o, me * local, local, axis=1)

    return jax.shard_map(shard, mesh=mesh, in_specs=(spec,) * 4, out_specs=spec, check_vma=False)(q, k, v, g)


def _layer(layer_kind: str, method: str, mesh):
    if layer_kind == "softmax_attention":
        if method == "lasp2h":
            return lambda q, k, v: sequence_parallel_softmax_attention(q, k, v, mesh=mesh)
        return lambda q, k, v: softmax_attention(q, k, v, impl="xla")
    if method == "lasp2":
        return lambda q, k, v, g: sequence_parallel_linear_attention(q, k, v, g=g, mesh=mesh)
    if method == "gather_kv":
        return functools.partial(_gather_kv_layer, mesh=mesh)
    return lambda q, k, v, g: linear_attention(q, k, v, g=g, impl="xla")


def measure(layer_kind: str, method: str, length: int, mesh) -> dict:
    dtype = jnp.dtype(_DTYPE.value)
    sharding = NamedSharding(mesh, PartitionSpec(None, SEQUENCE_AXIS))
    token = jax.ShapeDtypeStruct((_BATCH.value, length, _HEADS.value, _HEAD_DIM.value), dtype, sharding=sharding)
    gate = jax.ShapeDtypeStruct((_BATCH.value, length, _HEADS.value), jnp.float32, sharding=sharding)
    inputs = (token, token, token) + ((gate,) if layer_kind == "linear_attention" else ())
    # Softmax attention's gradients are asked for sharded like the inputs, as a training step keeps them.
    gradient_shardings = (sharding,) * 3 if layer_kind == "softmax_attention" else None
    layer = _layer(layer_kind, method, mesh)
    arguments = tuple(range(len(inputs)))
    row = {"method": method, "length": length}
    for pass_name, fn, out_shardings in (
        ("forward", layer, sharding),
        ("forward_backward", jax.grad(lambda *a: jnp.sum(layer(*a).astype(jnp.float32)), arguments),
         gradient_shardings),
    ):
        text = jax.jit(fn, out_shardings=out_shardings).lower(*inputs).compile().as_text()
        found = communication.collectives(text, mesh.size)
        row[pass_name] = {
            "bytes_per_device": sum(c.bytes_received_per_device for c in found),
            "collectives": [f"{c.kind} {c.shape}" for c in found],
        }
    logging.info("%s T=%d: forward %.3g B, forward+backward %.3g B per device", method, length,
                 row["forward"]["bytes_per_device"], row["forward_backward"]["bytes_per_device"])
    return row


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:.3g} {unit}"
        num_bytes /= 1024
    raise AssertionError


def _collectives_of_the_largest_length(result: dict, methods) -> list[str]:
    by = {(r["method"], r["length"]): r for r in result["rows"]}
    lines = ["", "Collectives of the largest T:", ""]
    largest = max(r["length"] for r in result["rows"])
    for method in methods:
        for pass_name in ("forward", "forward_backward"):
            ops = by[method, largest][pass_name]["collectives"]
            lines.append(f"- {method}, {pass_name}: {len(ops)}: " + ", ".join(ops[:6]) + (" ..." if len(ops) > 6 else ""))
    return lines


def write_markdown(result: dict, path: str) -> None:
    setup = result["setup"]
    lines = [
        "# Sequence-parallel linear attention: bytes each device receives per layer",
        "",
        f"Gated linear attention, B={setup['batch']}, H={setup['heads']}, K=V={setup['head_dim']}, {setup['dtype']} "
        f"inputs, T split over {setup['shards']} devices; from the compiled HLO (jax {setup['jax']}, "
        "ring-algorithm volumes). `python -m experiments.bench_sequence_parallel`.",
        "",
        "| T | LASP-2 fwd | LASP-2 fwd+bwd | all-gather K,V fwd | all-gather K,V fwd+bwd | XLA partitioner fwd | "
        "XLA partitioner fwd+bwd | K,V gather / LASP-2 (fwd) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["method"], r["length"]): r for r in result["rows"]}
    for length in sorted({r["length"] for r in result["rows"]}):
        cells = []
        for method in _METHODS["linear_attention"]:
            for pass_name in ("forward", "forward_backward"):
                cells.append(_human(by[method, length][pass_name]["bytes_per_device"]))
        ratio = by["gather_kv", length]["forward"]["bytes_per_device"] / by["lasp2", length]["forward"]["bytes_per_device"]
        lines.append(f"| {length} | " + " | ".join(cells) + f" | {ratio:,.0f}x |")
    lines += _collectives_of_the_largest_length(result, _METHODS["linear_attention"])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def gathered_kv_bytes(setup: dict, length: int) -> float:
    """What one device receives from an all-gather of K and V: ``2 B T H D bytes (P - 1) / P``."""
    shards = setup["shards"]
    element = jnp.dtype(setup["dtype"]).itemsize
    return 2 * setup["batch"] * length * setup["heads"] * setup["head_dim"] * element * (shards - 1) / shards


def write_softmax_markdown(result: dict, path: str) -> None:
    setup = result["setup"]
    lines = [
        "# Sequence-parallel softmax attention: bytes each device receives per layer",
        "",
        f"Causal softmax attention, B={setup['batch']}, H={setup['heads']}, D={setup['head_dim']}, {setup['dtype']} "
        f"inputs, T split over {setup['shards']} devices; from the compiled HLO (jax {setup['jax']}, "
        "ring-algorithm volumes). `python -m experiments.bench_sequence_parallel --layer=softmax_attention`.",
        "",
        "| T | LASP-2H fwd | LASP-2H fwd+bwd | 2 B T H D bytes (P-1)/P | XLA partitioner fwd | "
        "XLA partitioner fwd+bwd | partitioner / LASP-2H (fwd) | partitioner / LASP-2H (fwd+bwd) | "
        "collectives LASP-2H (fwd, fwd+bwd) | collectives partitioner (fwd, fwd+bwd) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["method"], r["length"]): r for r in result["rows"]}
    for length in sorted({r["length"] for r in result["rows"]}):
        lasp2h, gspmd = by["lasp2h", length], by["gspmd", length]
        ratios = [gspmd[p]["bytes_per_device"] / lasp2h[p]["bytes_per_device"] for p in ("forward", "forward_backward")]
        cells = [_human(lasp2h["forward"]["bytes_per_device"]), _human(lasp2h["forward_backward"]["bytes_per_device"]),
                 _human(gathered_kv_bytes(setup, length)), _human(gspmd["forward"]["bytes_per_device"]),
                 _human(gspmd["forward_backward"]["bytes_per_device"]), f"{ratios[0]:.2f}x", f"{ratios[1]:.2f}x"]
        cells += [", ".join(str(len(row[p]["collectives"])) for p in ("forward", "forward_backward"))
                  for row in (lasp2h, gspmd)]
        lines.append(f"| {length} | " + " | ".join(cells) + " |")
    lines += _collectives_of_the_largest_length(result, _METHODS["softmax_attention"])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(result: dict, path: str) -> None:
    fig, axis = pyplot().subplots(figsize=(6.5, 4.2))
    # Methods in the order measured; a marker each, since equal volumes draw one line over another.
    for method, marker in zip(dict.fromkeys(r["method"] for r in result["rows"]), "os^"):
        rows = sorted((r for r in result["rows"] if r["method"] == method), key=lambda r: r["length"])
        for pass_name, style in (("forward", "-"), ("forward_backward", "--")):
            axis.plot([r["length"] for r in rows], [max(r[pass_name]["bytes_per_device"], 1.0) for r in rows], style,
                      marker=marker, fillstyle="none" if marker != "o" else "full",
                      label=f"{_LABELS[method]}, {pass_name.replace('_', '+')}")
    axis.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="bytes received per device",
             title=f"one layer, {result['setup']['shards']} sequence shards")
    axis.grid(True, which="both", lw=0.3)
    axis.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv):
    start_main(argv)
    jax.config.update("jax_num_cpu_devices", _SHARDS.value)
    mesh = jax.make_mesh((_SHARDS.value,), (SEQUENCE_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices("cpu"))
    kind = _LAYER.value
    lengths = _LENGTHS.value or _DEFAULT_LENGTHS[kind]
    rows = [measure(kind, method, int(length), mesh) for length in lengths for method in _METHODS[kind]]
    setup = {"batch": _BATCH.value, "heads": _HEADS.value, "head_dim": _HEAD_DIM.value, "dtype": _DTYPE.value,
             "shards": _SHARDS.value, "jax": jax.__version__}
    markdown = write_softmax_markdown if kind == "softmax_attention" else write_markdown
    write_outputs({"setup": setup, "rows": rows}, _OUT_DIR.value, _OUTPUT_NAME[kind], markdown, write_plot)


if __name__ == "__main__":
    app.run(main)

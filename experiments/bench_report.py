"""The benchmark's markdown tables and plot, from the result dictionary of :mod:`experiments.bench`.

The main table's last column puts each row beside the best peer of its group (same op, dtype, D, T, B, H):
``time / min(time of the measured peers)``, forward and forward + backward, so below 1 means faster than
every peer measured.
"""

from jaxattn.train.plots import pyplot, save_figure


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(value) -> str:
    return "-" if value is None or value < 0 else f"{value / 2**20:.3g}"


def _ratio(numerator, denominator) -> str:
    return "-" if numerator is None or denominator is None else f"{numerator / denominator:.2f}"


# Kernels not of this project (the rows "ratio to best peer" divides by).
PEER_IMPLS = ("cudnn", "fla", "jax_mgpu", "jax_triton", "tokamax", "tokamax_triton")


def _key(row) -> tuple:
    """A row group: the same problem (results written before B and H were per row have neither)."""
    return row["op"], row["dtype"], row["head_dim"], row["length"], row.get("batch"), row.get("heads")


def _best_peer_ms(rows: list[dict]) -> dict:
    """Per row group, the least forward and forward + backward milliseconds of its measured peers."""
    best = {}
    for r in rows:
        if r["impl"] in PEER_IMPLS and not r["skipped"]:
            forward, both = best.get(_key(r), (None, None))
            best[_key(r)] = (min(x for x in (forward, r["forward_ms"]) if x is not None),
                             min((x for x in (both, r["forward_backward_ms"]) if x is not None), default=None))
    return best


def _versus_best_peer(row: dict, best: dict) -> str:
    forward, both = best.get(_key(row), (None, None))
    if forward is None:
        return "-"
    return f"{_ratio(row['forward_ms'], forward)} / {_ratio(row['forward_backward_ms'], both)}"


def _shape(row) -> str:
    return "-" if row.get("batch") is None else f"{row['batch']}x{row['heads']}"


def write_markdown(result: dict, path: str) -> None:
    peaks = ", ".join(f"{dtype} {g:.1f}" for dtype, g in result["matmul_gflops"].items())
    # a preset's groups each have their own B and H (the table's B x H column)
    sizes = f"preset {result['preset']}" if result.get("preset") else f"B={result['batch']}, H={result['heads']}"
    lines = [
        f"Device `{result['device']}`, jax {result['jax']}, {sizes}; "
        f"dense matmul GFLOP/s: {peaks}; copy bandwidth {result['bandwidth_gbs']:.1f} GB/s.",
        "",
        "| op | impl | dtype | D | T | B x H | forward ms | fwd+bwd ms | peak MiB fwd / fwd+bwd | tokens/s | GFLOP/s "
        "| % of matmul | GB/s | % of bandwidth | ratio to best peer fwd / fwd+bwd |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best = _best_peer_ms(result["rows"])
    for r in result["rows"]:
        head = f"| {r['op']} | {r['impl']} | {r['dtype']} | {r['head_dim']} | {r['length']} | {_shape(r)} |"
        if r["skipped"]:
            lines.append(f"{head} skipped: {r['skipped']} | | | | | | | | |")
            continue
        lines.append(
            f"{head} {r['forward_ms']:.2f} | {_ms(r['forward_backward_ms'])} | {_mib(r['forward_peak_bytes'])} / "
            f"{_mib(r['forward_backward_peak_bytes'])} | {r['tokens_per_s']:.3g} | {r['forward_gflops']:.1f} | "
            f"{100 * r['forward_fraction_of_matmul']:.1f} | {r['forward_gbytes_per_s']:.1f} | "
            f"{100 * r['forward_fraction_of_bandwidth']:.1f} | {_versus_best_peer(r, best)} |"
        )
    measured = {(r["impl"], *_key(r)): r for r in result["rows"] if not r["skipped"]}
    pairs = [(measured[("xla", *_key(r))], r) for r in result["rows"]
             if r["impl"] == "pallas" and not r["skipped"] and ("xla", *_key(r)) in measured]
    if pairs:
        lines += ["", "Time ratios, first over second (vendor: the raw Triton kernel for linear attention and cuDNN "
                  "for softmax attention, forward only; fla's chunk kernels for the delta rule ops):", "",
                  "| op | dtype | D | T | B x H | xla / pallas forward | xla / pallas fwd+bwd | pallas / vendor forward "
                  "| pallas / vendor fwd+bwd |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for xla, pallas in pairs:
            vendor = next((measured[key] for key in ((impl, *_key(pallas)) for impl in ("triton", "cudnn", "fla"))
                           if key in measured), {})
            lines.append(f"| {xla['op']} | {xla['dtype']} | {xla['head_dim']} | {xla['length']} | {_shape(xla)} | "
                         f"{_ratio(xla['forward_ms'], pallas['forward_ms'])} | "
                         f"{_ratio(xla['forward_backward_ms'], pallas['forward_backward_ms'])} | "
                         f"{_ratio(pallas['forward_ms'], vendor.get('forward_ms'))} | "
                         f"{_ratio(pallas['forward_backward_ms'], vendor.get('forward_backward_ms'))} |")
    natives = [r for r in result["rows"] if r["impl"] == "native" and not r["skipped"]]
    if natives:
        lines += ["", "L-Matmul time relative to the native matmul of the same shape (3-bit L-Mul):", "",
                  "| dtype | D | T | formula | bitwise (xla) | bitwise (pallas) |", "|---|---:|---:|---:|---:|---:|"]
        for native in natives:
            ratios = [_ratio((measured.get((impl, *_key(native))) or {}).get("forward_ms"), native["forward_ms"])
                      for impl in ("formula", "bitwise", "pallas")]
            lines.append(f"| {native['dtype']} | {native['head_dim']} | {native['length']} | " + " | ".join(ratios) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(result: dict, path: str) -> None:
    """Forward tokens/s against T, one panel per op, one line per (impl, dtype, D)."""
    ops = list(dict.fromkeys(r["op"] for r in result["rows"]))
    figure, axes = pyplot().subplots(1, max(len(ops), 1), figsize=(5.5 * max(len(ops), 1), 4.2),
                                     constrained_layout=True, squeeze=False)
    for axis, op in zip(axes[0], ops):
        rows = [r for r in result["rows"] if r["op"] == op and not r["skipped"]]
        for line in dict.fromkeys((r["impl"], r["dtype"], r["head_dim"]) for r in rows):
            points = [r for r in rows if (r["impl"], r["dtype"], r["head_dim"]) == line]
            axis.plot([r["length"] for r in points], [r["tokens_per_s"] for r in points], "o-",
                      label=f"{line[0]} {line[1]} D={line[2]}")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length T")
        axis.set_ylabel("forward tokens / s")
        axis.set_title(op)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    figure.suptitle(result["device"])
    save_figure(figure, path, dpi=110)

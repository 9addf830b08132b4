"""The benchmark's markdown tables and plot, from the result dictionary of :mod:`experiments.bench`."""

from jaxattn.train.plots import pyplot, save_figure


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(value) -> str:
    return "-" if value is None or value < 0 else f"{value / 2**20:.3g}"


def _ratio(numerator, denominator) -> str:
    return "-" if numerator is None or denominator is None else f"{numerator / denominator:.2f}"


def _key(row) -> tuple:
    return row["op"], row["dtype"], row["head_dim"], row["length"]


def write_markdown(result: dict, path: str) -> None:
    peaks = ", ".join(f"{dtype} {g:.1f}" for dtype, g in result["matmul_gflops"].items())
    lines = [
        f"Device `{result['device']}`, jax {result['jax']}, B={result['batch']}, H={result['heads']}; "
        f"dense matmul GFLOP/s: {peaks}; copy bandwidth {result['bandwidth_gbs']:.1f} GB/s.",
        "",
        "| op | impl | dtype | D | T | forward ms | fwd+bwd ms | peak MiB fwd / fwd+bwd | tokens/s | GFLOP/s "
        "| % of matmul | GB/s | % of bandwidth |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        head = f"| {r['op']} | {r['impl']} | {r['dtype']} | {r['head_dim']} | {r['length']} |"
        if r["skipped"]:
            lines.append(f"{head} skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"{head} {r['forward_ms']:.2f} | {_ms(r['forward_backward_ms'])} | {_mib(r['forward_peak_bytes'])} / "
            f"{_mib(r['forward_backward_peak_bytes'])} | {r['tokens_per_s']:.3g} | {r['forward_gflops']:.1f} | "
            f"{100 * r['forward_fraction_of_matmul']:.1f} | {r['forward_gbytes_per_s']:.1f} | "
            f"{100 * r['forward_fraction_of_bandwidth']:.1f} |"
        )
    measured = {(r["impl"], *_key(r)): r for r in result["rows"] if not r["skipped"]}
    pairs = [(measured[("xla", *_key(r))], r) for r in result["rows"]
             if r["impl"] == "pallas" and not r["skipped"] and ("xla", *_key(r)) in measured]
    if pairs:
        lines += ["", "Time ratios, first over second (vendor: the raw Triton kernel for linear attention and cuDNN "
                  "for softmax attention, forward only; fla's chunk kernels for the delta rule ops):", "",
                  "| op | dtype | D | T | xla / pallas forward | xla / pallas fwd+bwd | pallas / vendor forward "
                  "| pallas / vendor fwd+bwd |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for xla, pallas in pairs:
            vendor = next((measured[key] for key in ((impl, *_key(pallas)) for impl in ("triton", "cudnn", "fla"))
                           if key in measured), {})
            lines.append(f"| {xla['op']} | {xla['dtype']} | {xla['head_dim']} | {xla['length']} | "
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

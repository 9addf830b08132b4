"""Low-rank tensor attention (Alman & Song) against the exact output: error versus the entry bound and degree.

    python -m experiments.tensor_lowrank --out_dir=results/tensor_lowrank

The theory (docs/tensor_attention.md#low-rank): with entries of Q, K1, K2 bounded by ``R``, the logits
``scale sum_l q_l k1_l k2_l`` lie in ``[-L, L]``, ``L = scale D R^3``, and a degree-g polynomial
approximates ``exp`` there well only while ``L`` is small against g; past that the error of the
low-rank path explodes (the n^{1+o(1)} versus n^{3-o(1)} phase transition is in the entry bound).
For each bound ``R`` (entries uniform in ``[-R, R]``) and degree ``g``: the relative error
``||poly - exact|| / ||exact||`` of :func:`jaxattn.ops.tensor_attention_poly` against the exact
:func:`jaxattn.ops.tensor_attention`, the worst over ``--seeds`` draws, non-causal and causal.
Writes ``lowrank_error.md``, ``.json`` and ``.png`` (error against ``L``, one line per degree).
"""

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from jaxattn.ops import tensor_attention, tensor_attention_poly
from jaxattn.ops.tensor_attention_poly import feature_rank
from jaxattn.train.plots import pyplot, save_figure

_OUT_DIR = flags.DEFINE_string("out_dir", "runs/tensor_lowrank", "Where lowrank_error.md / .json / .png go.")
_LENGTH = flags.DEFINE_integer("length", 64, "Tokens T.")
_DIM = flags.DEFINE_integer("dim", 4, "Head size D (the feature rank is C(D + g, g)).")
_DEGREES = flags.DEFINE_list("degrees", ["1", "2", "3", "4", "6", "8"], "Polynomial degrees g.")
_BOUNDS = flags.DEFINE_list("bounds", ["0.25", "0.5", "0.75", "1", "1.25", "1.5", "2", "3"], "Entry bounds R.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Random draws per (R, g); the worst error is reported.")


def relative_error(bound: float, degree: int, causal: bool, seed: int) -> float:
    keys = jax.random.split(jax.random.key(seed), 5)
    shape = (1, _LENGTH.value, 2, _DIM.value)
    q, k1, k2 = (jax.random.uniform(key, shape, minval=-bound, maxval=bound) for key in keys[:3])
    v1, v2 = (jax.random.normal(key, shape) for key in keys[3:])
    exact = tensor_attention(q, k1, k2, v1, v2, causal=causal, impl="reference")
    approx = tensor_attention_poly(q, k1, k2, v1, v2, degree=degree, causal=causal)
    return float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact))


def write_plot(result: dict, path: str) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, causal in zip(axes, (False, True)):
        for degree in result["degrees"]:
            rows = [r for r in result["rows"] if r["degree"] == degree and r["causal"] == causal]
            axis.plot([r["logit_bound"] for r in rows], [max(r["error"], 1e-8) for r in rows], marker="o",
                      label=f"g={degree} (rank {feature_rank(result['dim'], degree)})")
        axis.set(xscale="log", yscale="log", xlabel="logit bound L = scale D R^3",
                 title=("causal" if causal else "non-causal") + f", T={result['length']}, D={result['dim']}")
        axis.axhline(0.01, color="gray", lw=0.5, ls="--")
        axis.grid(True, which="both", lw=0.3)
    axes[0].set_ylabel("relative error vs exact")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_markdown(result: dict, path: str) -> None:
    degrees = result["degrees"]
    lines = [
        f"Relative error of the degree-g low-rank path against exact tensor attention (worst of "
        f"{result['seeds']} draws), T={result['length']}, D={result['dim']}, H=2, entries of q, k1, k2 "
        "uniform in [-R, R], v1, v2 Gaussian; L = scale D R^3 bounds the logits.",
        "",
    ]
    for causal in (False, True):
        lines += [f"**{'causal' if causal else 'non-causal'}**", "",
                  "| R | L | " + " | ".join(f"g={g} (r={feature_rank(result['dim'], g)})" for g in degrees) + " |",
                  "|---:|---:|" + "---:|" * len(degrees)]
        for bound in result["bounds"]:
            rows = {r["degree"]: r for r in result["rows"] if r["bound"] == bound and r["causal"] == causal}
            logit = rows[degrees[0]]["logit_bound"]
            lines.append(f"| {bound:g} | {logit:.3g} | " + " | ".join(f"{rows[g]['error']:.1e}" for g in degrees) + " |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv):
    start_main(argv)
    degrees, bounds = [int(g) for g in _DEGREES.value], [float(b) for b in _BOUNDS.value]
    scale = _DIM.value**-0.5
    rows = []
    for bound in bounds:
        for degree in degrees:
            for causal in (False, True):
                error = max(relative_error(bound, degree, causal, seed) for seed in range(_SEEDS.value))
                rows.append(dict(bound=bound, logit_bound=scale * _DIM.value * bound**3, degree=degree,
                                 causal=causal, error=error))
                logging.info("R=%g g=%d %s: relative error %.2e", bound, degree, "causal" if causal else "full", error)
    result = dict(length=_LENGTH.value, dim=_DIM.value, seeds=_SEEDS.value, degrees=degrees, bounds=bounds, rows=rows)
    write_outputs(result, _OUT_DIR.value, "lowrank_error", write_markdown, write_plot)


if __name__ == "__main__":
    app.run(main)

"""jaxattn's S5 against the S5 authors' layer (``lindermanlab/S5``, ``s5/ssm.py:S5SSM``): same
parameters, same outputs, and the time of one forward and of one forward+backward of each.

    python -m experiments.bench_s5_authors --s5_repo=/path/to/S5 --out=results/s5_vs_authors

Their code is imported at run time from ``--s5_repo`` (a checkout of their repository) and is never
part of this one; both layers get the same parameter tree (:mod:`experiments.s5_authors`).

Forward+backward is ``jax.value_and_grad`` of ``sum(y * w)`` (``w`` fixed) with respect to the
parameters and the input, jitted; both layers are timed alternately in this process and each row
reports medians over ``--repeats`` calls after a warm-up, so both see the same machine load.
"""

import json
import os
import platform
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.s5_authors import build_pair, forward_and_gradient, load_authors_ssm, max_abs_diff, parse_shape

FLAGS = flags.FLAGS
flags.DEFINE_string("s5_repo", None, "path of a checkout of github.com/lindermanlab/S5 (holds s5/ssm.py)")
flags.DEFINE_string("shapes", "1024x128x64x4x8,4096x64x64x4x4", "comma-separated LxHxNxJxB shapes")
flags.DEFINE_integer("repeats", 15, "timed calls per layer and measurement (medians are reported)")
flags.DEFINE_string("out", None, "path stem: writes STEM.json and STEM.md (else prints only)")
flags.DEFINE_string("note", "", "a line added to the markdown (e.g. the machine was shared)")


def _timed(fn, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def alternate_medians(fns: dict, args, repeats: int) -> dict:
    """Median seconds of each function, called in turn ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn, args))
    return {name: float(np.median(t)) for name, t in times.items()}


def compare(authors_ssm, shape: dict, repeats: int) -> dict:
    """One row: output and gradient agreement and the four medians for ``shape``."""
    apply_ours, apply_theirs, params = build_pair(
        authors_ssm, features=shape["features"], state_size=shape["state_size"], blocks=shape["blocks"]
    )
    kx, kw = jax.random.split(jax.random.key(1))
    dims = (shape["batch"], shape["length"], shape["features"])
    x, w = jax.random.normal(kx, dims), jax.random.normal(kw, dims)
    forward = {"ours": jax.jit(apply_ours), "theirs": jax.jit(apply_theirs)}
    backward = {"ours": forward_and_gradient(apply_ours), "theirs": forward_and_gradient(apply_theirs)}
    y_ours, y_theirs = forward["ours"](params, x), forward["theirs"](params, x)
    grads_ours, grads_theirs = backward["ours"](params, x, w)[1], backward["theirs"](params, x, w)[1]
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_theirs))
    fwd = alternate_medians(forward, (params, x), repeats)
    fwd_bwd = alternate_medians(backward, (params, x, w), repeats)
    return dict(
        shape, max_abs_diff_output=max_abs_diff(y_ours, y_theirs),
        max_rel_diff_output=max_abs_diff(y_ours, y_theirs) / float(jnp.max(jnp.abs(y_theirs))),
        max_rel_diff_gradients=max_abs_diff(grads_ours, grads_theirs) / scale,
        forward_s=fwd, forward_backward_s=fwd_bwd,
        speedup_forward=fwd["theirs"] / fwd["ours"], speedup_forward_backward=fwd_bwd["theirs"] / fwd_bwd["ours"],
    )


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(result: dict) -> str:
    lines = [
        "| L | H | N | J | B | max abs diff y (rel) | max rel diff grads | fwd ours ms | fwd theirs ms | fwd speed-up "
        "| fwd+bwd ours ms | fwd+bwd theirs ms | fwd+bwd speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        f, fb = r["forward_s"], r["forward_backward_s"]
        lines.append(
            f"| {r['length']} | {r['features']} | {r['state_size']} | {r['blocks']} | {r['batch']} "
            f"| {r['max_abs_diff_output']:.1e} ({r['max_rel_diff_output']:.0e}) | {r['max_rel_diff_gradients']:.1e} "
            f"| {1e3 * f['ours']:.1f} | {1e3 * f['theirs']:.1f} | {r['speedup_forward']:.2f}x "
            f"| {1e3 * fb['ours']:.1f} | {1e3 * fb['theirs']:.1f} | {r['speedup_forward_backward']:.2f}x |"
        )
    machine = f"{result['cpu']}, {result['cpu_count']} cores, load average {result['load_average']} at start"
    lines += ["", f"Device: {result['device']} ({machine}); jax {result['jax_version']}; "
              f"medians of {result['repeats']} alternating calls."]
    if result["note"]:
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    try:
        authors_ssm = load_authors_ssm(FLAGS.s5_repo)
    except FileNotFoundError as error:
        raise app.UsageError(str(error)) from None
    result = dict(
        command=shlex.join(["python", "-m", "experiments.bench_s5_authors", *sys.argv[1:]]),
        device=str(jax.devices()[0].device_kind), cpu=cpu_name(), cpu_count=os.cpu_count(),
        load_average=" ".join(f"{v:.2f}" for v in os.getloadavg()), jax_version=jax.__version__,
        repeats=FLAGS.repeats, note=FLAGS.note, rows=[],
    )
    for text in FLAGS.shapes.split(","):
        result["rows"].append(compare(authors_ssm, parse_shape(text), FLAGS.repeats))
    table = markdown(result)
    print(table)
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(f"{FLAGS.out}.json", "w") as f:
            json.dump(result, f, indent=2)
        with open(f"{FLAGS.out}.md", "w") as f:
            f.write(f"`{result['command']}`\n\n{table}")


if __name__ == "__main__":
    app.run(main)

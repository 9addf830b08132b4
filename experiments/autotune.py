"""Tunes the Pallas kernels' block sizes on this device and writes the winners to the autotune cache.

For every op x length x head dim x dtype, :func:`jaxattn.autotune.autotune` times the candidate
block sizes of the op's kernel family (one progress line each: config, time, ok or rejected and
why) and stores the fastest one whose output matches the XLA path; a summary table closes the run.
Each problem is written as soon as it is measured, so an interrupted run keeps what it measured,
and a rerun skips the problems already in the cache unless ``--retune``. On a GPU, from the
repository root::

    JAX_PLATFORMS=cuda,cpu python -m experiments.autotune --ops=softmax_attention,linear_attention \\
        --lengths=1024,4096 --head_dims=64,128 --dtypes=bfloat16,float32 --backward

On CPU (the Pallas interpreter; tests and smoke runs)::

    python -m experiments.autotune --interpret_pallas --lengths=32 --head_dims=16 --batch=1 --heads=1 \\
        --max_candidates=2 --cache=/tmp/autotune.json

See docs/autotune.md#running-it.
"""

from typing import Optional

from absl import app, flags

from experiments.logging_setup import start_main
from jaxattn.autotune import OPS, TuningResult, autotune, user_cache_path
from jaxattn.autotune.candidates import default_candidates, describe
from jaxattn.autotune.search import kernel_platform

FLAGS = flags.FLAGS
flags.DEFINE_list("ops", ["softmax_attention"], f"ops to tune, among {sorted(OPS)}")
flags.DEFINE_list("lengths", ["1024", "4096"], "sequence lengths T")
flags.DEFINE_list("head_dims", ["64", "128"], "head dims D")
flags.DEFINE_list("dtypes", ["bfloat16"], "input dtypes")
flags.DEFINE_integer("batch", 4, "batch size B")
flags.DEFINE_integer("heads", 8, "heads H")
flags.DEFINE_integer("repeats", 10, "timed calls per candidate (their median is its time)")
flags.DEFINE_integer("warmup", 2, "untimed calls per candidate before the timed ones")
flags.DEFINE_string("cache", "", "the cache written (default: $JAXATTN_AUTOTUNE_CACHE, else "
                                  "~/.cache/jaxattn/autotune.json)")
flags.DEFINE_bool("backward", False, "time and check forward+backward (ops whose backward runs the kernels)")
flags.DEFINE_bool("retune", False, "measure problems already in the cache again")
flags.DEFINE_bool("interpret_pallas", False, "run the kernels in the Pallas interpreter (CPU tests)")
flags.DEFINE_integer("max_candidates", 0, "try only the first N candidates (the defaults first); 0: all")


def summary_table(results: list[tuple[str, TuningResult]]) -> str:
    """A markdown table: one row per problem, its winner, its time and the defaults' time."""
    rows = ["| op | dtype | bucket | best | ms | defaults ms | speedup | accepted |",
            "|---|---|---|---|---|---|---|---|"]
    for op, result in results:
        _, _, dtype, bucket = result.key.split(" | ")
        entry = result.entry
        if entry is None:
            rows.append(f"| {op} | {dtype} | {bucket} | (none accepted) | | | | 0/{len(result.measurements)} |")
            continue
        default: Optional[float] = entry.get("default_seconds")
        speedup = f"{default / entry['seconds']:.2f}x" if default else ""
        accepted = f"{entry['candidates'] - entry['rejected']}/{entry['candidates']}"
        rows.append(f"| {op} | {dtype} | {bucket} | {describe(entry['block_sizes'])} | {1e3 * entry['seconds']:.3f} "
                    f"| {f'{1e3 * default:.3f}' if default else ''} | {speedup} | "
                    f"{accepted}{' (cached)' if result.cached else ''} |")
    return "\n".join(rows)


def main(argv):
    start_main(argv)
    unknown = sorted(set(FLAGS.ops) - set(OPS))
    if unknown:
        raise app.UsageError(f"--ops: unknown {unknown}; choose among {sorted(OPS)}")
    cache_path = FLAGS.cache or user_cache_path()
    interpret = True if FLAGS.interpret_pallas else None
    print(f"autotune cache: {cache_path}", flush=True)
    results = []
    for op in FLAGS.ops:
        for length in map(int, FLAGS.lengths):
            for head_dim in map(int, FLAGS.head_dims):
                for dtype in FLAGS.dtypes:
                    candidates = None
                    if FLAGS.max_candidates:
                        platform = kernel_platform(interpret)
                        candidates = default_candidates(OPS[op].family, platform)[:FLAGS.max_candidates]
                    result = autotune(
                        op, batch=FLAGS.batch, length=length, heads=FLAGS.heads, head_dim=head_dim, dtype=dtype,
                        candidates=candidates, backward=FLAGS.backward, interpret=interpret, repeats=FLAGS.repeats,
                        warmup=FLAGS.warmup, cache_path=cache_path, retune=FLAGS.retune,
                        progress=lambda line: print(line, flush=True),
                    )
                    results.append((op, result))
    print(summary_table(results), flush=True)


if __name__ == "__main__":
    app.run(main)

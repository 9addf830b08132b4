"""Train one config once per seed and report mean ± std over the seeds.

    python -m experiments.seed_sweep --config=experiments/configs/triple_sum.py:tensor --seeds=0,1,2 \
        --workdir=runs/triple_sum_tensor_seeds

The config and its ``--config.field=value`` overrides are those of ``experiments.train``. Seed K
trains the config with ``config.seed = K`` (the initialisation, the order of the training batches
and dropout; the task's data keep their own ``task.options.seed``) into ``workdir/seed_K``, a work
directory of ``experiments.train``'s layout. Rerunning the command resumes every seed from its
latest checkpoint; a finished seed is restored and evaluated, not trained again.

Writes ``workdir/seeds.json`` and ``workdir/seeds.md``: per seed the validation and test accuracy
and loss and the wall time of the call that finished its training, and a ``mean ± std`` row over
the seeds (``experiments.seeds``: population std).
"""

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.logging_setup import start_main
from experiments.preemptible import run_preemptible
from experiments.seeds import SEEDS_HELP, mean_spread, parse_seeds, train_seed
from jaxattn.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, optionally with :[VARIANT][,key=value ...].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the per-seed runs (seed_K/), seeds.json and seeds.md.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], SEEDS_HELP)
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()
METRICS = tuple((split, name) for split in ("validation", "test") for name in ("accuracy", "loss"))


def summarize(runs: list[dict]) -> dict:
    """``{"validation": {"accuracy": "m ± s", "loss": ...}, "test": {...}, "wall_time_s": ...}`` over ``runs``."""
    summary = {"validation": {}, "test": {}}
    for split, name in METRICS:
        summary[split][name] = mean_spread([run[split][name] for run in runs], digits=4)
    summary["wall_time_s"] = mean_spread([run["wall_time_s"] for run in runs], digits=0)
    return summary


def seeds_markdown(result: dict) -> str:
    header = " | ".join(f"{split} {name}" for split, name in METRICS)
    overrides = "".join(f" --config.{key}={value}" for key, value in result["overrides"].items())
    lines = [f"Config `{result['config']}{overrides}`, seeds {result['seeds']} "
             f"({result['num_parameters']:,} parameters, {result['step']} steps); mean ± std over seeds (population std).",
             "",
             f"| seed | {header} | wall time (s) |", "|---|" + "---:|" * (len(METRICS) + 1)]
    for run in result["runs"]:
        cells = " | ".join(f"{run[split][name]:.4f}" for split, name in METRICS)
        lines.append(f"| {run['seed']} | {cells} | {run['wall_time_s']:.0f} |")
    summary = result["mean_std"]
    cells = " | ".join(summary[split][name] for split, name in METRICS)
    lines.append(f"| mean ± std | {cells} | {summary['wall_time_s']} |")
    return "\n".join(lines) + "\n"


def sweep(config, config_argument: str, overrides: dict, seeds: list[int], workdir: str) -> dict:
    """Trains every seed, then writes and returns the ``seeds.json`` record."""
    runs = []
    for index, seed in enumerate(seeds):
        logging.info("Seed %d (%d of %d)", seed, index + 1, len(seeds))
        runs.append(train_seed(config, seed, os.path.join(workdir, f"seed_{seed}")))
    result = {"config": config_argument, "overrides": overrides, "seeds": seeds,
              "num_parameters": runs[0]["num_parameters"], "step": runs[0]["step"], "runs": runs,
              "mean_std": summarize(runs)}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "seeds.json"), "w") as f:
            json.dump(result, f, indent=2)
        markdown = seeds_markdown(result)
        with open(os.path.join(workdir, "seeds.md"), "w") as f:
            f.write(markdown)
        print(markdown)
    return result


def main(argv):
    start_main(argv)
    workdir = _WORKDIR.value

    def work():
        os.makedirs(workdir, exist_ok=True)
        config_flag = flags.FLAGS["config"]
        sweep(_CONFIG.value, config_flags.get_config_filename(config_flag),
              config_flags.get_override_values(config_flag), parse_seeds(_SEEDS.value), workdir)

    run_preemptible(work, workdir)


if __name__ == "__main__":
    app.run(main)

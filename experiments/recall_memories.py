"""MQAR accuracy against the number of key-value pairs: one state, more memories, a hybrid, softmax.

    python -m experiments.recall_memories --workdir=runs/recall_memories --out_dir=results/recall_memories \
        --pairs=8,16,32,64 --seeds=0,1,2

Trains ``experiments/configs/recall_memories.py:MODEL,num_pairs=P`` for every model, number of pairs
and seed (``workdir/MODEL_pairsP/seed_K``, each a resumable ``experiments.train`` work directory;
rerunning the command resumes, and finished runs are only evaluated), then writes
``recall_memories.{json,md,png}`` to ``--out_dir``: test accuracy over the query positions, mean ±
std over seeds (population std), and its plot against the number of pairs. ``--report_only`` writes
them from the runs that have finished, training nothing.
"""

import os

from absl import app, flags, logging

from experiments.configs.recall_memories import VARIANTS, get_config
from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from experiments.preemptible import run_preemptible
from experiments.seeds import SEEDS_HELP, finished_seed, parse_seeds, seed_summary, train_seed
from jaxattn.parallel import distributed
from jaxattn.train.plots import pyplot, save_figure

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the runs (MODEL_pairsP/seed_K/).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where recall_memories.json / .md / .png go (default: --workdir).")
_MODELS = flags.DEFINE_list("models", list(VARIANTS), f"Models among {list(VARIANTS)}.")
_PAIRS = flags.DEFINE_list("pairs", ["8", "16", "32", "64"], "Numbers of key-value pairs.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], SEEDS_HELP)
_EPOCHS = flags.DEFINE_integer("num_epochs", None, "Training epochs (default: the config's).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", None, "Training sequences (default: the config's).")
_NUM_TEST = flags.DEFINE_integer("num_test", None, "Validation and test sequences each (default: the config's).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Train nothing: report the runs that have finished.")
flags.mark_flags_as_required(["workdir"])
distributed.define_flags()


def run(models, pairs, seeds, workdir: str, *, num_epochs=None, task_options=None, report_only=False) -> dict:
    """Trains every (model, pairs, seed) and returns the record ``recall_memories.json`` holds.

    ``task_options`` override fields of ``config.task.options`` (smaller runs). ``report_only``: train
    nothing, report the runs that finished (a cell lists the seeds it has; cells without any are left out).
    """
    cells = []
    for model in models:
        for num_pairs in pairs:
            argument = f"{model},num_pairs={num_pairs}" + ("" if num_epochs is None else f",num_epochs={num_epochs}")
            config = get_config(argument)
            config.task.options.update(task_options or {})
            run_dirs = {seed: os.path.join(workdir, f"{model}_pairs{num_pairs}", f"seed_{seed}") for seed in seeds}
            if report_only:
                runs = [record for seed in seeds if (record := finished_seed(seed, run_dirs[seed])) is not None]
            else:
                logging.info("%s with %d pairs: seeds %s", model, num_pairs, seeds)
                runs = [train_seed(config, seed, run_dirs[seed]) for seed in seeds]
            if not runs:
                continue
            summary = seed_summary([run["test"]["accuracy"] for run in runs])
            cells.append({"model": model, "num_pairs": num_pairs, "config": f"recall_memories.py:{argument}",
                          "seeds": [run["seed"] for run in runs], "num_parameters": runs[0]["num_parameters"],
                          "steps": runs[0]["step"], "test_accuracy": summary["values"], "mean": summary["mean"],
                          "std": summary["std"], "wall_time_s": [run["wall_time_s"] for run in runs]})
    return {"models": list(models), "pairs": list(pairs), "seeds": list(seeds), "cells": cells}


def _row(result: dict, model: str) -> list[dict]:
    return [cell for cell in result["cells"] if cell["model"] == model]


def write_markdown(result: dict, path: str) -> None:
    lines = ["MQAR test accuracy over the query positions: mean ± std over the seeds (population std; "
             "n = seeds of the cell).", "",
             "| model | parameters | " + " | ".join(f"{p} pairs" for p in result["pairs"]) + " |",
             "|---|---:|" + "---:|" * len(result["pairs"])]
    for model in result["models"]:
        row = {cell["num_pairs"]: cell for cell in _row(result, model)}
        if not row:
            continue
        values = " | ".join(f"{row[p]['mean']:.4f} ± {row[p]['std']:.4f} (n = {len(row[p]['seeds'])})" if p in row
                            else "not run" for p in result["pairs"])
        lines.append(f"| {model} | {next(iter(row.values()))['num_parameters']:,} | {values} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(result: dict, path: str) -> None:
    figure, axes = pyplot().subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for index, model in enumerate(result["models"]):
        row = _row(result, model)
        if not row:
            continue
        line = axes.errorbar([cell["num_pairs"] for cell in row], [cell["mean"] for cell in row],
                             yerr=[cell["std"] for cell in row], marker="o", capsize=3, label=model)
        # Every seed as a cross: a bimodal cell (some seeds solve the task, some stay at chance) shows as such.
        # Shifted sideways per model (a few percent on the log axis) so that equal values stay apart.
        shift = 2 ** (0.05 * (index - (len(result["models"]) - 1) / 2))
        seeds_x = [cell["num_pairs"] * shift for cell in row for _ in cell["test_accuracy"]]
        seeds_y = [value for cell in row for value in cell["test_accuracy"]]
        axes.scatter(seeds_x, seeds_y, s=30, marker="x", color=line.lines[0].get_color(), zorder=3)
        for cell in row:
            axes.annotate(f"n={len(cell['seeds'])}", (cell["num_pairs"], cell["mean"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("key-value pairs")
    axes.set_ylabel("test accuracy (queries)")
    axes.set_title("MQAR: mean ± std over seeds (o), each seed (x)")
    axes.legend()
    save_figure(figure, path, dpi=120)


def main(argv):
    start_main(argv)
    unknown = sorted(set(_MODELS.value) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; models: {list(VARIANTS)}")

    def work():
        sizes = {"num_train": _NUM_TRAIN.value, "num_validation": _NUM_TEST.value, "num_test": _NUM_TEST.value}
        result = run(_MODELS.value, [int(p) for p in _PAIRS.value], parse_seeds(_SEEDS.value), _WORKDIR.value,
                     num_epochs=_EPOCHS.value, task_options={k: v for k, v in sizes.items() if v is not None},
                     report_only=_REPORT_ONLY.value)
        write_outputs(result, _OUT_DIR.value or _WORKDIR.value, "recall_memories", write_markdown, plot)

    run_preemptible(work, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)

"""State tracking on word problems: which transitions let one layer track parity and S3?

    python -m experiments.state_tracking --workdir=runs/state_tracking

Negative eigenvalues (Grazzi et al. 2025) and Householder products (DeltaProduct, Siems et al.
2025): a linear RNN whose transitions have eigenvalues in [0, 1] cannot track parity at any length
beyond its training words, one whose transitions reach -1 can; a product of two reflections per
token (DeltaProduct, n_h = 2) is a rotation, which S3's word problem needs in one layer. Each model
of ``experiments/configs/state_tracking.py`` is trained on words of 2..``--train_length`` letters
and tested on words of every ``--test_lengths`` (from 4x the training length on, the model has
never seen such a state). Reported per test length: the accuracy of the running product at a
word's last letter (``final``: the state after every letter) and over all its positions
(``token``), mean and spread over ``--seeds``.

Writes ``state_tracking.json``, ``.md`` and ``.png`` (accuracy against test length, a panel per
group, a curve per model's mean and a thin one per run). Each run trains in ``WORKDIR/GROUP/MODEL/seed_S`` and resumes there.
"""

import json
import os

import jax
import numpy as np
from absl import app, flags, logging

from experiments.configs import load_config
from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from experiments.seeds import SEEDS_HELP, mean_spread, parse_seeds
from jaxattn.data import load_task
from jaxattn.data.word_problem import accuracy_by_length
from jaxattn.train import build_model, restore_variables, train_and_evaluate
from jaxattn.train.plots import pyplot, save_figure

STUDIES = {
    "Z2": ("delta_net", "delta_net_negative", "gated", "gated_negative", "softmax"),
    "S3": ("delta_net", "delta_net_negative", "delta_product_negative", "softmax"),
}

SOLVED = 0.9  # a run "solves" a length when its final-letter accuracy there reaches this

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (trained models in sub-directories).")
_GROUPS = flags.DEFINE_list("groups", list(STUDIES), f"Groups to study, of {sorted(STUDIES)}.")
_MODELS = flags.DEFINE_list("models", None, "Only these models of each study (default: all).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], SEEDS_HELP)
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Training epochs of each run.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 10_000, "Training words.")
_TRAIN_LENGTH = flags.DEFINE_integer("train_length", 32, "Longest training word.")
_TEST_LENGTHS = flags.DEFINE_list("test_lengths", ["32", "64", "128", "256"], "Test word lengths.")
_NUM_TEST = flags.DEFINE_integer("num_test_per_length", 500, "Test words per length.")
_BATCH = flags.DEFINE_integer("eval_batch_size", 250, "Test words per forward pass.")
flags.mark_flag_as_required("workdir")


def run_config(group: str, model: str, seed: int):
    config = load_config("state_tracking", model)
    config.seed = seed
    config.task.options.update(group=group, train_length=_TRAIN_LENGTH.value, test_lengths=(_TRAIN_LENGTH.value,),
                               num_train=_NUM_TRAIN.value)
    config.train.num_epochs = _EPOCHS.value
    return config


def predictions(config, variables: dict, inputs: np.ndarray) -> np.ndarray:
    """Predicted classes ``[N, L]`` of the trained model on ``inputs`` (any length: every model here
    is recurrent or attends causally)."""
    task = load_task(config.task.name, **{**config.task.options, "num_train": 1, "num_validation": 0})
    model = build_model(config.model, task)
    apply = jax.jit(lambda tokens: model.apply(variables, tokens, train=False).argmax(-1))
    batch = _BATCH.value
    return np.concatenate([np.asarray(apply(inputs[i:i + batch])) for i in range(0, len(inputs), batch)])


def run(group: str, model: str, seed: int, test: dict) -> dict:
    """Trains (or resumes) one model and measures its accuracy per test length; cached in its directory."""
    run_dir = os.path.join(_WORKDIR.value, group, model, f"seed_{seed}")
    result_path = os.path.join(run_dir, "by_length.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    config = run_config(group, model, seed)
    logging.info("%s / %s / seed %d: training in %s", group, model, seed, run_dir)
    summary = train_and_evaluate(config, run_dir)
    variables = jax.device_get(restore_variables(config, run_dir))
    by_length = accuracy_by_length(predictions(config, variables, test["inputs"]), test["targets"], test["lengths"])
    result = dict(num_parameters=summary["num_parameters"], in_distribution=summary["test"],
                  by_length={str(length): metrics for length, metrics in by_length.items()})
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
    logging.info("%s / %s / seed %d: final accuracy by length %s", group, model, seed,
                 {length: round(m["final_accuracy"], 3) for length, m in by_length.items()})
    return result


def study(group: str, models, seeds) -> dict:
    lengths = tuple(sorted(map(int, _TEST_LENGTHS.value)))
    test = load_task("word_problem", group=group, train_length=_TRAIN_LENGTH.value, test_lengths=lengths,
                     num_train=0, num_validation=0, num_test_per_length=_NUM_TEST.value).splits["test"]
    rows = {}
    for model in models:
        runs = [run(group, model, seed, test) for seed in seeds]
        rows[model] = dict(
            num_parameters=runs[0]["num_parameters"],
            **{metric: {str(length): [r["by_length"][str(length)][metric] for r in runs] for length in lengths}
               for metric in ("final_accuracy", "token_accuracy")},
        )
    return rows


def write_markdown(result: dict, path: str) -> None:
    lengths = result["test_lengths"]
    lines = [f"Word problems, one-layer causal taggers of width 64, trained on words of 2..{result['train_length']} "
             f"letters ({result['epochs']} epochs, {result['num_train']} words), seeds {result['seeds']} "
             "(mean ± std over seeds). Accuracy of the running product at a word's last letter:", ""]
    far = [t for t in lengths if t >= 4 * result["train_length"]]
    solved_header = f" runs >= {SOLVED} at T={far[0]} |" if far else ""
    for group, rows in result["studies"].items():
        chance = 1 / {"Z2": 2, "S3": 6}.get(group, np.nan)
        lines += [f"**{group}** (chance {chance:.3f})", "",
                  "| model | parameters | " + " | ".join(f"T={t}" for t in lengths) + " |" + solved_header,
                  "|---|---:|" + "---:|" * (len(lengths) + bool(far))]
        for model, row in rows.items():
            cells = " | ".join(mean_spread(row["final_accuracy"][str(t)]) for t in lengths)
            solved = ""
            if far:
                runs = row["final_accuracy"][str(far[0])]
                solved = f" {sum(a >= SOLVED for a in runs)} of {len(runs)} |"
            lines.append(f"| {model} | {row['num_parameters']:,} | {cells} |{solved}")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_plot(result: dict, path: str) -> None:
    groups = list(result["studies"])
    fig, axes = pyplot().subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    lengths = result["test_lengths"]
    for ax, group in zip(axes[0], groups):
        for model, row in result["studies"][group].items():
            values = np.asarray([row["final_accuracy"][str(t)] for t in lengths])  # [lengths, seeds]
            line, = ax.plot(lengths, values.mean(1), marker="o", label=f"{model} (mean)")
            # each run too: a mean over seeds hides whether some runs solve the task and others do not
            ax.plot(lengths, values, color=line.get_color(), alpha=0.35, linewidth=0.8)
        ax.axvline(result["train_length"], color="gray", linestyle=":", label="longest training word")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("test word length")
        ax.set_ylabel("accuracy at the last letter")
        ax.set_ylim(0, 1.02)
        ax.set_title(group)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv):
    start_main(argv)
    unknown = sorted(set(_GROUPS.value) - set(STUDIES))
    if unknown:
        raise app.UsageError(f"--groups: {unknown} not among {sorted(STUDIES)}")
    seeds = parse_seeds(_SEEDS.value)
    studies = {}
    for group in _GROUPS.value:
        models = [m for m in STUDIES[group] if _MODELS.value is None or m in _MODELS.value]
        studies[group] = study(group, models, seeds)
    result = dict(train_length=_TRAIN_LENGTH.value, test_lengths=sorted(map(int, _TEST_LENGTHS.value)),
                  epochs=_EPOCHS.value, num_train=_NUM_TRAIN.value, seeds=seeds, studies=studies)
    write_outputs(result, _WORKDIR.value, "state_tracking", write_markdown, write_plot)


if __name__ == "__main__":
    app.run(main)

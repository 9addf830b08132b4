"""Convert a softmax-attention classifier to linear attention: Hedgehog versus elu + 1.

    python -m experiments.hedgehog_convert --workdir=runs/hedgehog_convert

1. Train the teacher: a 4-layer bidirectional softmax-attention classifier (rotary positions) on
   sequential digits.
2. For each student feature map (Hedgehog, elu + 1): copy the teacher's weights into a linear
   attention model of the same shape; for Hedgehog, distil the feature maps on the teacher's
   attention weights; evaluate as converted; fine-tune the whole model briefly and evaluate again.
3. Write ``results.json`` and ``results.md`` (test accuracy of each stage next to the teacher's).

Every training stage resumes from its own sub-directory when the command is rerun.
"""

import json
import os

import jax
from absl import app, flags, logging

from experiments.logging_setup import start_main

from experiments.configs import load_config
from experiments.configs.attention_digits import ATTENTION
from jaxattn.data import ArrayIterator, load_task
from jaxattn.train import build_model, evaluate_variables, restore_variables, train_and_evaluate
from jaxattn.train.convert import distill_hedgehog_maps, teacher_queries_and_keys, transfer_parameters
from jaxattn.train.loop import build_experiment

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (one sub-directory per stage).")
_TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 60, "Epochs of teacher training.")
_FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 10, "Epochs of student fine-tuning.")
_DISTILL_STEPS = flags.DEFINE_integer("distill_steps", 300, "Adam steps of feature-map distillation.")
flags.mark_flag_as_required("workdir")


def classifier_config(mixer: str, epochs: int, **options):
    config = load_config("attention_digits", f"{mixer},num_epochs={epochs}")
    config.model.mixer_options.update(options)
    if epochs < 10:
        config.optimizer.warmup_epochs = 0.5
    return config


def distillation_batches(train_arrays, teacher_model, teacher_variables, steps: int):
    batches = ArrayIterator(train_arrays, batch_size=64, seed=1)
    queries_and_keys = jax.jit(
        lambda variables, inputs, lengths: teacher_queries_and_keys(
            teacher_model, variables, inputs, lengths, num_heads=ATTENTION["num_heads"], rotary=ATTENTION["rotary"],
        )
    )
    for _ in range(steps):
        batch = next(batches)
        yield queries_and_keys(teacher_variables, batch["inputs"], batch["lengths"])


def main(argv):
    start_main(argv)
    workdir = _WORKDIR.value
    teacher_config = classifier_config("softmax_attention", _TEACHER_EPOCHS.value)
    teacher = train_and_evaluate(teacher_config, os.path.join(workdir, "teacher"))
    teacher_variables = jax.device_get(restore_variables(teacher_config, os.path.join(workdir, "teacher")))
    task = load_task(teacher_config.task.name, **teacher_config.task.options)
    teacher_model = build_model(teacher_config.model, task)
    results = {"teacher": teacher["test"]}

    for feature_map in ("hedgehog", "elu_plus_one"):
        config = classifier_config("linear_attention", _FINETUNE_EPOCHS.value, feature_map=feature_map)
        student_params = jax.device_get(build_experiment(config).state.params)
        params, fresh = transfer_parameters(teacher_variables["params"], student_params)
        logging.info("%s student: %d parameter arrays new, the rest copied: %s", feature_map, len(fresh), fresh)
        entry = {}
        if feature_map == "hedgehog":
            batches = distillation_batches(task.splits["train"], teacher_model, teacher_variables, _DISTILL_STEPS.value)
            params, losses = distill_hedgehog_maps(params, batches, causal=False)
            entry["distillation_loss"] = {"first": losses[0], "last": losses[-1]}
            logging.info("Hedgehog distillation loss %.4f -> %.4f", losses[0], losses[-1])
        variables = {"params": params, "batch_stats": {}}
        entry["converted"] = evaluate_variables(config, variables)["test"]
        finetuned = train_and_evaluate(config, os.path.join(workdir, f"{feature_map}_finetune"), initial_variables=variables)
        entry["finetuned"] = finetuned["test"]
        results[feature_map] = entry

    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = [
        "| model | test accuracy as converted | after fine-tuning |",
        "|---|---:|---:|",
        f"| softmax teacher | {results['teacher']['accuracy']:.4f} | |",
    ]
    for name in ("hedgehog", "elu_plus_one"):
        entry = results[name]
        lines.append(f"| {name} | {entry['converted']['accuracy']:.4f} | {entry['finetuned']['accuracy']:.4f} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)

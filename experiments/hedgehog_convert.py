"""Convert a softmax-attention classifier to linear attention: Hedgehog versus elu + 1, over seeds.

    python -m experiments.hedgehog_convert --workdir=/tmp/hedgehog_convert --seeds=0,1,2

For each seed K (the seed of the teacher's and the students' initialisation, dropout and batches):

1. Train the teacher in ``workdir/seed_K/teacher``: a 4-layer bidirectional softmax-attention
   classifier (rotary positions) on sequential digits. Every recipe of the seed shares it.
2. For each student feature map (Hedgehog, elu + 1): copy the teacher's weights into a linear
   attention model of the same shape; for Hedgehog, distil the feature maps on the teacher's
   attention weights (all layers jointly, on the teacher's own queries and keys, the rest frozen),
   saved in ``workdir/seed_K/RECIPE/hedgehog_maps.msgpack``; evaluate as converted; fine-tune the
   whole model in ``workdir/seed_K/RECIPE/<map>_finetune`` and evaluate again.
3. Measure the distilled maps' fit to the teacher's attention on test sequences, layer by layer
   (:func:`jaxattn.train.convert.attention_fit`), with the identity-initialised maps beside them.
4. Write ``workdir/results_RECIPE.json`` and ``.md``: per seed the teacher's and students' test
   accuracy and recovery (student / teacher), then mean ± std over seeds
   (:mod:`experiments.hedgehog_report`).

``--recipe`` names the student sub-directory, so recipes that differ in the distillation and
fine-tuning flags share the teachers. Every stage resumes when the command is rerun.
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging
from flax import serialization

from experiments.configs import load_config
from experiments.configs.attention_digits import ATTENTION
from experiments.hedgehog_report import add_recovery, markdown, summarise
from experiments.logging_setup import start_main
from experiments.seeds import SEEDS_HELP, parse_seeds
from jaxattn.data import ArrayIterator, load_task
from jaxattn.train import build_model, evaluate_variables, restore_variables, train_and_evaluate
from jaxattn.train.convert import (
    attention_fit, distill_hedgehog_maps, hedgehog_map_params, teacher_queries_and_keys, transfer_parameters,
)
from jaxattn.train.loop import build_experiment

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (seed_K/teacher, seed_K/RECIPE/..., results).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], SEEDS_HELP)
_RECIPE = flags.DEFINE_string("recipe", "default", "Name of this distillation / fine-tuning recipe (sub-directory).")
_STUDENTS = flags.DEFINE_list("students", ["hedgehog", "elu_plus_one"], "Feature maps of the students.")
_TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 60, "Epochs of teacher training.")
_DISTILL_STEPS = flags.DEFINE_integer("distill_steps", 300, "Optimiser steps of feature-map distillation.")
_DISTILL_BATCH = flags.DEFINE_integer("distill_batch_size", 64, "Sequences per distillation step.")
_DISTILL_LR = flags.DEFINE_float("distill_lr", 1e-2, "Learning rate (constant) of the distillation.")
_DISTILL_WD = flags.DEFINE_float("distill_weight_decay", 0.0, "AdamW weight decay of the maps (0: Adam).")
_FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 10, "Epochs of student fine-tuning.")
_FINETUNE_LR = flags.DEFINE_float("finetune_lr", None, "Peak fine-tuning learning rate (default: the teacher's).")
_FINETUNE_WARMUP = flags.DEFINE_float(
    "finetune_warmup_epochs", None, "Linear warmup of the fine-tuning (default: the teacher's, 0.5 under 10 epochs)."
)
_FIT_EXAMPLES = flags.DEFINE_integer("fit_examples", 256, "Test sequences on which the attention fit is measured.")
flags.mark_flag_as_required("workdir")


def classifier_config(mixer: str, epochs: int, seed: int, *, lr=None, warmup_epochs=None, **options):
    """``attention_digits`` with ``mixer`` for ``epochs``; ``lr`` and ``warmup_epochs`` override its
    optimiser (the teacher's peak 4e-3, cosine to 0, 5 warmup epochs; 0.5 for runs under 10 epochs)."""
    config = load_config("attention_digits", f"{mixer},num_epochs={epochs}")
    config.seed = seed
    config.model.mixer_options.update(options)
    if epochs < 10:
        config.optimizer.warmup_epochs = 0.5
    if warmup_epochs is not None:
        config.optimizer.warmup_epochs = warmup_epochs
    if lr is not None:
        config.optimizer.lr = lr
    return config


def queries_and_keys_function(teacher_model):
    """jitted ``(variables, inputs, lengths) ->`` the teacher's per-layer ``(q, k)`` ``[B, T, H, D]``."""
    return jax.jit(lambda variables, inputs, lengths: teacher_queries_and_keys(
        teacher_model, variables, inputs, lengths, num_heads=ATTENTION["num_heads"], rotary=ATTENTION["rotary"],
    ))


def distillation_batches(train_arrays, queries_and_keys, teacher_variables, steps: int, batch_size: int, seed: int):
    """``steps`` batches of the teacher's queries and keys on shuffled training sequences (teacher
    forcing: every layer's maps see the teacher's own inputs, not the student's)."""
    batches = ArrayIterator(train_arrays, batch_size=batch_size, seed=seed)
    for _ in range(steps):
        batch = next(batches)
        yield queries_and_keys(teacher_variables, batch["inputs"], batch["lengths"])


def loss_curve(losses: list[float], points: int = 20) -> dict:
    """First and last step's loss, the mean of the last 5 % of steps, and ``points`` window means."""
    windows = np.array_split(np.asarray(losses), min(points, len(losses)))
    tail = losses[-max(1, len(losses) // 20):]
    return {"first": losses[0], "last": losses[-1], "last_5_percent_mean": float(np.mean(tail)),
            "steps": len(losses), "window_means": [float(np.mean(w)) for w in windows]}


def fit_summary(map_params, layers) -> dict:
    """:func:`attention_fit` per layer (bidirectional) and its mean over layers."""
    per_layer = attention_fit(map_params, layers, causal=False)
    return {key: float(np.mean([layer[key] for layer in per_layer])) for key in per_layer[0]} | {"layers": per_layer}


def distilled_hedgehog(params, task, queries_and_keys, teacher_variables, seed: int, directory: str):
    """The student's parameters with distilled maps and the loss curve, from ``directory`` if saved."""
    maps_path, curve_path = os.path.join(directory, "hedgehog_maps.msgpack"), os.path.join(directory, "distillation.json")
    if os.path.exists(maps_path) and os.path.exists(curve_path):
        with open(maps_path, "rb") as f:
            maps = serialization.from_bytes(hedgehog_map_params(params), f.read())
        for name, parts in maps.items():
            params[name]["mixer"].update(parts)
        with open(curve_path) as f:
            return params, json.load(f)
    start = time.time()
    batches = distillation_batches(task.splits["train"], queries_and_keys, teacher_variables, _DISTILL_STEPS.value,
                                   _DISTILL_BATCH.value, seed=seed + 1)
    params, losses = distill_hedgehog_maps(params, batches, causal=False, learning_rate=_DISTILL_LR.value,
                                           weight_decay=_DISTILL_WD.value)
    curve = loss_curve(losses) | {"seconds": time.time() - start}
    logging.info("Hedgehog distillation loss %.4f -> %.4f in %.0f s", losses[0], losses[-1], curve["seconds"])
    os.makedirs(directory, exist_ok=True)
    with open(maps_path, "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(hedgehog_map_params(params))))
    with open(curve_path, "w") as f:
        json.dump(curve, f, indent=2)
    return params, curve


def run_seed(seed: int) -> dict:
    """Teacher, then each student as converted and fine-tuned, for one seed."""
    seed_dir = os.path.join(_WORKDIR.value, f"seed_{seed}")
    recipe_dir = os.path.join(seed_dir, _RECIPE.value)
    teacher_config = classifier_config("softmax_attention", _TEACHER_EPOCHS.value, seed)
    start = time.time()
    teacher = train_and_evaluate(teacher_config, os.path.join(seed_dir, "teacher"))
    result = {"teacher": teacher["test"] | {"seconds": time.time() - start}}
    teacher_variables = jax.device_get(restore_variables(teacher_config, os.path.join(seed_dir, "teacher")))
    task = load_task(teacher_config.task.name, **teacher_config.task.options)
    queries_and_keys = queries_and_keys_function(build_model(teacher_config.model, task))

    for feature_map in _STUDENTS.value:
        start = time.time()
        config = classifier_config("linear_attention", _FINETUNE_EPOCHS.value, seed, lr=_FINETUNE_LR.value,
                                   warmup_epochs=_FINETUNE_WARMUP.value, feature_map=feature_map)
        student_params = jax.device_get(build_experiment(config).state.params)
        params, fresh = transfer_parameters(teacher_variables["params"], student_params)
        logging.info("%s student: %d parameter arrays new, the rest copied: %s", feature_map, len(fresh), fresh)
        entry = {}
        if feature_map == "hedgehog":
            initial_maps = hedgehog_map_params(params)
            params, entry["distillation_loss"] = distilled_hedgehog(
                params, task, queries_and_keys, teacher_variables, seed, recipe_dir)
            test = task.splits["test"]
            layers = queries_and_keys(teacher_variables, test["inputs"][: _FIT_EXAMPLES.value],
                                      test["lengths"][: _FIT_EXAMPLES.value])
            entry["attention_fit"] = {"identity_maps": fit_summary(initial_maps, layers),
                                      "distilled_maps": fit_summary(hedgehog_map_params(params), layers)}
        variables = {"params": params, "batch_stats": {}}
        entry["converted"] = evaluate_variables(config, variables)["test"]
        finetuned = train_and_evaluate(config, os.path.join(recipe_dir, f"{feature_map}_finetune"),
                                       initial_variables=variables)
        entry["finetuned"] = finetuned["test"]
        entry["seconds"] = time.time() - start
        result[feature_map] = entry
    return add_recovery(result, _STUDENTS.value)


def recipe_flags() -> dict:
    names = ("teacher_epochs", "distill_steps", "distill_batch_size", "distill_lr", "distill_weight_decay",
             "finetune_epochs", "finetune_lr", "finetune_warmup_epochs")
    return {name: flags.FLAGS[name].value for name in names}


def main(argv):
    start_main(argv)
    start = time.time()
    students = list(_STUDENTS.value)
    per_seed = {str(seed): run_seed(seed) for seed in parse_seeds(_SEEDS.value)}
    results = {"recipe": _RECIPE.value, "flags": recipe_flags(), "students": students, "per_seed": per_seed,
               "summary": summarise(per_seed, students), "seconds": time.time() - start}
    base = os.path.join(_WORKDIR.value, f"results_{_RECIPE.value}")
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(base + ".md", "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)

"""``train_and_evaluate``: the whole experiment, resumable from its work directory.

A work directory holds ``config.json``, ``metrics.jsonl``, TensorBoard events, ``checkpoints/``
and, at the end, ``summary.json``. Running the same config on the same directory again resumes
from the latest checkpoint and ends with the same metrics as an uninterrupted run.

See docs/architecture.md#training-and-checkpointing.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from jaxattn.data import ArrayIterator, TaskSpec, eval_batches, load_task
from jaxattn.models import LanguageModel, SequenceClassifier
from jaxattn.parallel import SEQUENCE_AXIS, batch_axis_size, device_put_batch, make_mesh
from jaxattn.train.checkpoint import Checkpointer, Preempted, abstract_like
from jaxattn.nn.arithmetic import product_arithmetic
from jaxattn.train.config import arithmetic_from_config, mesh_sizes, mixer_pattern, validate_config
from jaxattn.train.metrics import MetricsWriter
from jaxattn.train.optimizer import make_optimizer
from jaxattn.train.plots import plot_training_curves
from jaxattn.train.steps import TrainState, create_state, make_eval_step, make_train_step


def build_model(model_config: ml_collections.ConfigDict, task: TaskSpec):
    """``SequenceClassifier``, or for ``kind="language_model"`` a causal ``LanguageModel``."""
    if model_config.kind == "language_model":
        if task.vocab_size is None or not task.per_token:
            raise ValueError(f"config.model.kind='language_model' needs a token-level task; {task.name!r} is not")
        return LanguageModel(
            vocab_size=task.vocab_size, d_model=model_config.d_model, num_layers=model_config.num_layers,
            mixer=model_config.mixer, mixer_options=dict(model_config.mixer_options),
            mixer_pattern=mixer_pattern(model_config), prenorm=model_config.prenorm,
            activation=model_config.activation, dropout=model_config.dropout,
        )
    if task.per_token != (model_config.pooling == "none"):
        raise ValueError(
            f"task {task.name!r} has {'per-position' if task.per_token else 'per-sequence'} targets but "
            f"config.model.pooling={model_config.pooling!r}: per-position targets need pooling='none' "
            "(or config.model.kind='language_model' for a causal model), per-sequence ones 'mean' or 'last'"
        )
    return SequenceClassifier(
        num_classes=task.num_classes,
        d_model=model_config.d_model,
        num_layers=model_config.num_layers,
        mixer=model_config.mixer,
        mixer_options=dict(model_config.mixer_options),
        mixer_pattern=mixer_pattern(model_config),
        vocab_size=task.vocab_size,
        norm=model_config.norm,
        prenorm=model_config.prenorm,
        activation=model_config.activation,
        dropout=model_config.dropout,
        pooling=model_config.pooling,
    )


def _record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``config.json``; refuses to resume a work directory made with another config."""
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != current:
            changed = sorted(k for k in set(_flatten(previous)) | set(_flatten(current))
                             if _flatten(previous).get(k) != _flatten(current).get(k))
            raise ValueError(
                f"{workdir} holds a run with a different config (fields {changed}); "
                "use a new --workdir or delete the old one"
            )
    elif jax.process_index() == 0:
        # Written whole, then renamed: other processes checking the file never read half of it.
        with open(path + ".tmp", "w") as f:
            json.dump(current, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)


def _flatten(tree: dict, prefix: str = "config") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}.{key}"))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def evaluate(eval_step, state, arrays: dict[str, np.ndarray], batch_size: int, mesh) -> dict[str, float]:
    """Loss and accuracy over every example of one split."""
    totals = None
    for batch in eval_batches(
        arrays, batch_size=batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    ):
        out = eval_step(state, device_put_batch(batch, mesh))
        totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
    totals = jax.device_get(totals)
    return {"loss": float(totals["loss_sum"] / totals["count"]), "accuracy": float(totals["correct"] / totals["count"])}


def _train_steps(state, start_step: int, total_steps: int, *, train_step, eval_step, train_iter, task, mesh, writer, checkpointer,
                 progress, config, steps_per_epoch, dropout_key):
    """Runs steps ``start_step + 1 .. total_steps``: logs, evaluates and checkpoints as configured."""
    train_cfg = config.train
    eval_every = train_cfg.eval_every_steps or steps_per_epoch
    window, window_start = [], time.perf_counter()
    for step in range(start_step + 1, total_steps + 1):
        state, metrics = train_step(state, device_put_batch(next(train_iter), mesh), dropout_key)
        window.append(metrics)
        if step % train_cfg.log_every_steps == 0 or step == total_steps:
            means = {k: float(np.mean([m[k] for m in jax.device_get(window)])) for k in window[0]}
            steps_per_sec = len(window) / (time.perf_counter() - window_start)
            writer.write(step, "train", {**means, "epoch": step / steps_per_epoch, "steps_per_sec": steps_per_sec})
            progress.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}", refresh=False)
            window, window_start = [], time.perf_counter()
        if step % eval_every == 0 and step != total_steps:
            validation = evaluate(eval_step, state, task.splits["validation"], train_cfg.eval_batch_size, mesh)
            writer.write(step, "validation", validation)
            if not progress.disable:  # tqdm.write prints even from a disabled bar: process 0 only.
                progress.write(f"step {step}: validation loss {validation['loss']:.4f}, "
                               f"accuracy {validation['accuracy']:.4f}")
        checkpointer.save(step, state, train_iter.get_state(), force=step == total_steps)
        if checkpointer.reached_preemption(step) and step != total_steps:
            raise Preempted(f"Preempted: stopped at step {step} of {total_steps} after saving its checkpoint; "
                            "rerun the same command to resume")
        progress.update(1)
    return state


@dataclasses.dataclass
class Experiment:
    """Everything a config builds before training: data, mesh, model, optimiser, initial state."""

    task: TaskSpec
    mesh: Any
    model: Any
    tx: Any
    train_iter: ArrayIterator
    steps_per_epoch: int
    total_steps: int
    state: TrainState
    shardings: TrainState
    dropout_key: jax.Array

    def with_variables(self, variables: dict) -> "Experiment":
        """The same experiment starting from ``{"params", "batch_stats"}`` (e.g. converted weights)."""
        params = jax.device_put(variables["params"], self.shardings.params)
        batch_stats = jax.device_put(variables.get("batch_stats", {}), self.shardings.batch_stats)
        return dataclasses.replace(self, state=self.state.replace(params=params, batch_stats=batch_stats))


def _check_batch_layout(config: ml_collections.ConfigDict, task: TaskSpec, mesh) -> None:
    """Batch sizes split over ``data x fsdp`` and every split's positions over ``sequence``."""
    split = batch_axis_size(mesh)
    for field in ("batch_size", "eval_batch_size"):
        if config.train[field] % split:
            raise ValueError(
                f"config.train.{field}={config.train[field]} must be divisible by the {split} devices that split "
                f"the batch (mesh data x fsdp; mesh {dict(mesh.shape)})"
            )
    shards = mesh.shape[SEQUENCE_AXIS]
    for name, arrays in task.splits.items():
        inputs = arrays["inputs"]
        if shards > 1 and (inputs.ndim < 2 or inputs.shape[1] % shards):
            raise ValueError(
                f"config.mesh.sequence={shards}: the {name} split's sequence length "
                f"{inputs.shape[1] if inputs.ndim >= 2 else None} must be divisible by it (pad the task's sequences)"
            )


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config`` and builds the task, mesh, model, optimiser and sharded initial state."""
    validate_config(config, num_devices=jax.device_count())
    train_cfg, opt_cfg = config.train, config.optimizer
    task = load_task(config.task.name, **config.task.options)
    mesh = make_mesh(**mesh_sizes(config.mesh))
    _check_batch_layout(config, task, mesh)
    train_iter = ArrayIterator(
        task.splits["train"], batch_size=train_cfg.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    steps_per_epoch = train_iter.steps_per_epoch
    total_steps = train_cfg.num_epochs * steps_per_epoch
    model = build_model(config.model, task)
    tx = make_optimizer(
        lr=opt_cfg.lr, ssm_lr=opt_cfg.ssm_lr, weight_decay=opt_cfg.weight_decay,
        warmup_steps=int(opt_cfg.warmup_epochs * steps_per_epoch), total_steps=total_steps,
        min_lr_ratio=opt_cfg.min_lr_ratio, grad_clip_norm=opt_cfg.grad_clip_norm,
        ssm_param_patterns=tuple(opt_cfg.ssm_param_patterns),
    )
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    sample = {k: v[: batch_axis_size(mesh)] for k, v in task.splits["train"].items()}
    state, shardings = create_state(model, tx, sample, init_key, mesh)
    return Experiment(task, mesh, model, tx, train_iter, steps_per_epoch, total_steps, state, shardings, dropout_key)


def restore_variables(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``{"params", "batch_stats"}`` of the latest checkpoint in ``workdir`` (made with ``config``)."""
    experiment = build_experiment(config)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), interval=1, keep=1)
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
    state, _ = checkpointer.restore(step, abstract_like(experiment.state, experiment.shardings))
    checkpointer.close()
    return {"params": state.params, "batch_stats": state.batch_stats}


def _in_model_arithmetic(function):
    """Runs ``function(config, ...)`` with the product arithmetic of ``config.model.arithmetic`` in
    force, so every step it traces uses it."""

    @functools.wraps(function)
    def wrapped(config, *args, **kwargs):
        with product_arithmetic(arithmetic_from_config(config.model)):
            return function(config, *args, **kwargs)

    return wrapped


@_in_model_arithmetic
def evaluate_variables(config: ml_collections.ConfigDict, variables: dict, splits: Optional[dict] = None) -> dict:
    """Loss and accuracy of a model with the given variables (no training) on the task's validation
    and test splits, or on ``splits`` (name -> arrays of the task's kind, e.g. perturbed inputs)."""
    experiment = build_experiment(config).with_variables(variables)
    eval_step = make_eval_step(experiment.model, experiment.shardings, experiment.mesh)
    if splits is None:
        splits = {name: experiment.task.splits[name] for name in ("validation", "test")}
    return {name: evaluate(eval_step, experiment.state, arrays, config.train.eval_batch_size, experiment.mesh)
            for name, arrays in splits.items()}


@_in_model_arithmetic
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, initial_variables: Optional[dict] = None) -> dict:
    """Trains, evaluates periodically, checkpoints, and returns the final summary.

    ``initial_variables`` (``{"params", "batch_stats"}``) replace the random initialisation of a
    fresh run (a resumed run continues from its checkpoint instead).

    Returns:
      ``{"step", "num_parameters", "validation": {"loss", "accuracy"}, "test": {...}}``, also
      written to ``workdir/summary.json``; ``workdir/curves.png`` plots the training curves.
    """
    experiment = build_experiment(config)
    if initial_variables is not None:
        experiment = experiment.with_variables(initial_variables)
    os.makedirs(workdir, exist_ok=True)
    _record_config(config, workdir)
    is_main = jax.process_index() == 0
    train_cfg = config.train
    task, mesh, model, tx = experiment.task, experiment.mesh, experiment.model, experiment.tx
    train_iter, steps_per_epoch, total_steps = experiment.train_iter, experiment.steps_per_epoch, experiment.total_steps
    state, shardings, dropout_key = experiment.state, experiment.shardings, experiment.dropout_key
    num_parameters = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))

    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        interval=train_cfg.checkpoint_every_steps, keep=train_cfg.keep_checkpoints,
    )
    start_step: Optional[int] = checkpointer.latest_step()
    if start_step is not None:
        state, data_state = checkpointer.restore(start_step, abstract_like(state, shardings))
        train_iter.set_state(data_state)
        logging.info("Resumed from the checkpoint at step %d of %d in %s", start_step, total_steps, workdir)
    writer = MetricsWriter(workdir, resume_step=start_step)
    start_step = start_step or 0

    if is_main:
        logging.info(
            "Task %s: %d train examples, %d steps/epoch, %d steps; model %s with %d parameters on %d device(s) "
            "in %d process(es), mesh %s",
            task.name, train_iter.num_examples, steps_per_epoch, total_steps,
            "/".join(name for name, _ in mixer_pattern(config.model) or [(config.model.mixer, None)]),
            num_parameters, mesh.size, jax.process_count(), dict(mesh.shape),
        )
    train_step = make_train_step(model, tx, shardings, mesh, aux_loss_weight=config.train.aux_loss_weight)
    eval_step = make_eval_step(model, shardings, mesh)

    progress = tqdm(total=total_steps, initial=start_step, disable=not is_main, desc="train", unit="step",
                    dynamic_ncols=True, mininterval=1.0)
    try:
        state = _train_steps(
            state, start_step, total_steps, train_step=train_step, eval_step=eval_step,
            train_iter=train_iter, task=task, mesh=mesh, writer=writer, checkpointer=checkpointer,
            progress=progress, config=config, steps_per_epoch=steps_per_epoch, dropout_key=dropout_key,
        )
    finally:
        # Also on an interruption: let in-flight checkpoint writes finish so nothing is lost.
        progress.close()
        checkpointer.wait()
        checkpointer.close()

    summary = {
        "step": total_steps,
        "num_parameters": num_parameters,
        "validation": evaluate(eval_step, state, task.splits["validation"], train_cfg.eval_batch_size, mesh),
        "test": evaluate(eval_step, state, task.splits["test"], train_cfg.eval_batch_size, mesh),
    }
    for split in ("validation", "test"):
        writer.write(total_steps, f"final_{split}", summary[split])
    writer.close()
    if is_main:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        logging.info(
            "Final: validation accuracy %.4f (loss %.4f), test accuracy %.4f (loss %.4f); curves in %s",
            summary["validation"]["accuracy"], summary["validation"]["loss"],
            summary["test"]["accuracy"], summary["test"]["loss"], plot_training_curves(workdir),
        )
    return summary

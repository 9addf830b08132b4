"""The LRA configs: every TASK,model=MODEL[,local=true] argument validates, and every task and every model
trains a smoke step (the model and optimiser as published, made small: width 16, one layer, small
states) on fixture files in the release layout: one training step on the loader's first batch.
A config is a task's settings plus a model's, so six pairs that cover each task once and each model
at least once train; every pair is built and validated."""

import math

import pytest

from experiments.configs import load_config
from experiments.configs.lra import MODELS, TASKS
from jaxattn.parallel import device_put_batch
from jaxattn.train import validate_config
from jaxattn.train.loop import build_experiment
from jaxattn.train.steps import make_train_step
from tests.data.test_lra import write_aan, write_cifar, write_imdb, write_listops
from tests.data.test_lra_pathfinder import write_pathfinder

LAYERS = {"s4": "s4", "s4d": "s4d", "s5": "s5", "s4_ptd": "s4d", "s5_ptd": "s5"}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("local", [False, True])
def test_every_argument_gives_a_valid_config(task, model, local):
    config = load_config("lra", f"{task},model={model}" + (",local=true" if local else ""))
    validate_config(config)
    assert config.model.mixer == LAYERS[model]
    assert config.task.name == f"lra_{task}" or (local and task in ("listops", "pathfinder", "pathx"))
    assert (config.model.d_model == 64) == local


@pytest.mark.parametrize(
    "arg, message",
    [
        ("listops,model=mamba", r"lra: model='mamba' must be one of \('s4', 's4d', 's5', 's4_ptd', 's5_ptd'\)"),
        ("chess,model=s5",
         r"lra: unknown variant 'chess'; variants: listops, text, retrieval, image, pathfinder, pathx"),
        ("listops,mamba", r"lra: 'mamba' is not key=value"),  # the old positional spelling
        ("listops,model=s5,local=laptop", r"lra: local='laptop' must be a bool \(true or false\)"),
    ],
)
def test_bad_arguments_are_refused(arg, message):
    with pytest.raises(ValueError, match=message):
        load_config("lra", arg)


def test_the_default_argument_is_listops_with_s5():
    assert load_config("lra", "").to_dict() == load_config("lra", "listops,model=s5,local=false").to_dict()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("lra_release")
    write_listops(root)
    write_imdb(root)
    write_aan(root)
    write_cifar(root)
    for resolution in (32, 128):  # 20 images: 2 in each of validation and test, one batch each
        write_pathfinder(root, resolution=resolution, num_images=20)
    return root


def small(config):
    """Width 16, one layer, states of 4 per block; batch 2 over 2 devices; one epoch."""
    options = dict(config.model.mixer_options)
    options["state_size"] = 4 * options.get("blocks", 1)
    config.model.mixer_options = options
    config.model.update(d_model=16, num_layers=1)
    config.mesh.data = 2
    config.train.update(batch_size=2, eval_batch_size=2, num_epochs=1, log_every_steps=1, checkpoint_every_steps=2)
    return config


# Each task once, the models in turn: every model trains at least once.
SMOKE_PAIRS = [(task, MODELS[i % len(MODELS)]) for i, task in enumerate(TASKS)]


@pytest.mark.slow
@pytest.mark.parametrize("task, model", SMOKE_PAIRS)
def test_every_task_and_model_trains_a_smoke_step(release, task, model):
    config = small(load_config("lra", f"{task},model={model}"))
    config.task.options.data_dir = str(release)
    experiment = build_experiment(config)
    train_step = make_train_step(experiment.model, experiment.tx, experiment.shardings, experiment.mesh)
    batch = device_put_batch(next(experiment.train_iter), experiment.mesh)
    state, metrics = train_step(experiment.state, batch, experiment.dropout_key)
    assert int(state.step) == 1 and math.isfinite(float(metrics["loss"]))

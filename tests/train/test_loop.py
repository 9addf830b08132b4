"""The train loop end to end on a tiny model: it learns, and an interrupted run resumes exactly."""

import json
import os
import shutil

import pytest

import jaxattn.train.loop as loop
from jaxattn.train import default_config, train_and_evaluate
from jaxattn.train.config import mixer_options
from jaxattn.train.metrics import read_metrics


def tiny_config():
    config = default_config()
    config.task.name = "digits"
    config.model.d_model = 16
    config.model.num_layers = 2
    config.model.dropout = 0.1
    config.model.norm = "batch"
    config.model.mixer_options = mixer_options("s5", state_size=8, blocks=2, causal=False, dt_max=1.0)
    config.optimizer.lr = 1e-2
    config.optimizer.ssm_lr = 1e-2
    config.optimizer.warmup_epochs = 0.5
    config.train.batch_size = 64
    config.train.num_epochs = 2  # 20 steps per epoch
    config.train.log_every_steps = 5
    config.train.eval_every_steps = 10
    config.train.checkpoint_every_steps = 10
    return config


def deterministic(records):
    """Metrics without wall-clock fields."""
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records]


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted run of ``tiny_config`` (two epochs): its work directory and summary, shared
    by the tests below, which leave it as it was."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return str(workdir), train_and_evaluate(tiny_config(), str(workdir))


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, monkeypatch, finished_run):
    config = tiny_config()
    reference_dir, reference = finished_run
    assert reference["test"]["accuracy"] > 0.3, "two epochs lift a tiny S5 well above chance (0.1)"

    # Interrupt after 25 training batches: the last complete checkpoint is at step 20.
    real_put = loop.device_put_batch
    calls = {"train": 0}

    def failing_put(batch, mesh):
        if "weight" not in batch:
            calls["train"] += 1
            if calls["train"] > 25:
                raise Interrupted()
        return real_put(batch, mesh)

    workdir = str(tmp_path / "interrupted")
    monkeypatch.setattr(loop, "device_put_batch", failing_put)
    with pytest.raises(Interrupted):
        train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "20"
    assert max(r["step"] for r in read_metrics(workdir)) == 25
    monkeypatch.setattr(loop, "device_put_batch", real_put)

    resumed = train_and_evaluate(config, workdir)
    assert resumed == reference
    assert deterministic(read_metrics(workdir)) == deterministic(read_metrics(reference_dir))
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == reference


def test_rerunning_a_finished_run_reproduces_its_summary(tmp_path, finished_run):
    reference_dir, reference = finished_run
    workdir = shutil.copytree(reference_dir, tmp_path / "copy")  # the rerun appends to its metrics
    assert (workdir / "curves.png").stat().st_size > 10_000
    assert train_and_evaluate(tiny_config(), str(workdir)) == reference


def test_a_different_config_in_the_same_workdir_is_refused(finished_run):
    config = tiny_config()
    config.model.d_model = 32
    with pytest.raises(ValueError, match=r"different config \(fields \['config.model.d_model'\]\)"):
        train_and_evaluate(config, finished_run[0])


def test_batch_size_must_divide_over_devices(tmp_path):
    config = tiny_config()
    config.train.batch_size = 60
    with pytest.raises(ValueError, match="config.train.batch_size=60 must be divisible by the 8 devices"):
        train_and_evaluate(config, str(tmp_path))


def test_per_position_targets_need_a_model_that_labels_positions():
    from experiments.configs import load_config
    from jaxattn.data import load_task

    task = load_task("triple_sum", num_train=8, num_validation=4, num_test=4)
    model_config = load_config("triple_sum", "tensor").model
    assert loop.build_model(model_config, task).pooling == "none"
    model_config.pooling = "mean"
    with pytest.raises(ValueError, match="per-position targets need pooling='none'"):
        loop.build_model(model_config, task)

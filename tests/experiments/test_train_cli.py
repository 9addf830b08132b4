"""``python -m experiments.train`` end to end: flags, every shipped config, SIGKILL and resume."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from experiments.configs import load_config
from jaxattn.train import train_and_evaluate
from jaxattn.train.metrics import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"
TINY_DIGITS = [
    f"--config={CONFIGS / 's5_digits.py'}:num_epochs=2",
    "--config.model.d_model=32",
    "--config.model.num_layers=1",
    "--config.train.log_every_steps=5",
    "--config.train.checkpoint_every_steps=10",
]


def train_command(workdir, *flags):
    return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *flags]


def run_cli(workdir, *flags, timeout=600, env=None):
    return subprocess.run(train_command(workdir, *flags), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)


def compilation_cache_env(cache):
    """The test environment plus a persistent compilation cache: the runs of one config after the
    first load its compiled steps instead of compiling them again (the same programs, the same results)."""
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def deterministic(records):
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.model.nrom=layer", "nrom"),
        ("--config.model.norm=group", "config.model.norm='group' is not one of"),
        ("--config.model.mixer_options.heads=4", "heads"),
    ],
)
def test_bad_flags_fail_at_start_up_naming_the_field(tmp_path, flag, message):
    result = run_cli(tmp_path, f"--config={CONFIGS / 's5_digits.py'}", flag, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "checkpoints").exists(), "nothing may start before the config is valid"


@pytest.mark.parametrize(
    "argument, message",
    [
        ("lra.py:listops,modle=s4", "lra: unknown key 'modle'; keys: task, model, local"),
        ("lra.py:listops,s4,local", "lra: 's4' is not key=value"),
        ("s5_digits.py:num_epochs=ten", "s5_digits: num_epochs='ten' must be of type int"),
    ],
)
def test_bad_config_argument_fails_at_start_up_naming_it(tmp_path, argument, message):
    result = run_cli(tmp_path, f"--config={CONFIGS / argument}", timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "checkpoints").exists(), "nothing may start before the config is valid"


@pytest.mark.slow
def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    env = compilation_cache_env(tmp_path / "compilation_cache")
    result = run_cli(reference_dir, *TINY_DIGITS, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Final: validation accuracy" in result.stderr

    process = subprocess.Popen(
        train_command(killed_dir, *TINY_DIGITS), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = killed_dir / "checkpoints"
    deadline = time.time() + 300
    # Kill once the checkpoint of step 20 of 40 is complete (orbax renames a finished save to its step).
    while time.time() < deadline and not (checkpoints / "20").exists() and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "summary.json").exists()

    result = run_cli(killed_dir, *TINY_DIGITS, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from the checkpoint at step" in result.stderr
    summary = json.loads((killed_dir / "summary.json").read_text())
    assert summary == json.loads((reference_dir / "summary.json").read_text())
    assert deterministic(read_metrics(killed_dir)) == deterministic(read_metrics(reference_dir))


def shrink(config, **task_options):
    config.task.options.update(task_options)
    # Two layers stack blocks as deeper models do, at a fraction of the compile time of eight.
    config.model.num_layers = min(config.model.num_layers, 2)
    # The published ListOps batch (50) divides over 1, 2, 5 or 10 devices, not the 8 of the tests.
    config.mesh.data = 2
    config.train.num_epochs = 1
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = 2
    return config


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, arg, task_options",
    [
        # The published model on expressions of 50..200 tokens, not LRA's 500..2000.
        ("s5_listops", "", dict(num_train=100, num_validation=50, num_test=50, cache_dir=None, min_length=50,
                                max_length=200)),
        ("s5_listops", "local=true", dict(num_train=64, num_validation=32, num_test=32)),
        ("s5_parity", "", dict(num_train=128, num_validation=64, num_test=64)),
        ("recall", "softmax", dict(num_train=128, num_validation=64, num_test=64)),
        ("recall", "hedgehog", dict(num_train=128, num_validation=64, num_test=64)),
        ("recall", "gated", dict(num_train=128, num_validation=64, num_test=64)),
        ("triple_sum", "softmax", dict(num_train=128, num_validation=64, num_test=64)),
        ("triple_sum", "tensor", dict(num_train=128, num_validation=64, num_test=64)),
        # Length 784 on 200 of the 5,000 images (144 for training); the other smnist configs differ
        # from S4's only in the mixer (trained by the other smoke runs) and psmnist only in the
        # permutation (tests/data/test_mnist.py).
        ("smnist", "smnist,model=s4", dict(num_images=200)),
    ],
)
def test_shipped_config_smoke_run(tmp_path, name, arg, task_options):
    config = shrink(load_config(name, arg), **task_options)
    summary = train_and_evaluate(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, summary["step"] + 1))
    for split in ("validation", "test"):
        assert 0.0 <= summary[split]["accuracy"] <= 1.0
        assert summary[split]["loss"] > 0 and summary[split]["loss"] < 10


@pytest.mark.slow
def test_training_in_another_product_arithmetic(tmp_path):
    """Every Dense and attention product in 3-bit L-Mul (or fp8): training runs and its losses are
    finite, and differ from exact arithmetic's (one exact run for both)."""
    losses = {}
    for arithmetic in ("exact", "lmul", "fp8_e4m3"):
        config = shrink(load_config("recall", "softmax"), num_train=128, num_validation=64, num_test=64)
        config.model.num_layers = 1  # one block has every kind of product (Dense, q k^T, P v)
        config.model.arithmetic.kind = arithmetic
        summary = train_and_evaluate(config, str(tmp_path / arithmetic))
        losses[arithmetic] = summary["validation"]["loss"]
        assert 0 < summary["validation"]["loss"] < 10
    assert losses["exact"] != losses["lmul"]
    assert losses["exact"] != losses["fp8_e4m3"]

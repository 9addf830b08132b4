"""Two processes of one run (launch/local_multiprocess.sh, one CPU device each) against one process
with two devices: the same global batches, the same collectives, so the same metrics to the bit;
interrupted after a checkpoint that both processes wrote and started again, too."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from jaxattn.train.metrics import read_metrics
from tests.xla_flags import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "launch" / "local_multiprocess.sh"
TINY_DIGITS = [
    f"--config={REPO / 'experiments' / 'configs' / 's5_digits.py'}:num_epochs=3",
    "--config.model.d_model=16",
    "--config.model.num_layers=1",
    "--config.optimizer.warmup_epochs=0.2",
    "--config.train.checkpoint_every_steps=10",
]


def _env(cache, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXATTN_")}
    # The launcher replaces the test set-up's 8 fake devices; the resumed run reuses the compiled steps.
    env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable, JAXATTN_INITIALIZATION_TIMEOUT="120",
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **extra)
    return env


def _launch(workdir):
    return ["bash", str(LAUNCHER), "--quiet", "2", *TINY_DIGITS, f"--workdir={workdir}"]


def _deterministic(records):
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records]


@pytest.mark.slow
def test_two_processes_interrupted_and_resumed_end_like_one_process_with_two_devices(tmp_path):
    single, multi, cache = tmp_path / "single", tmp_path / "multi", tmp_path / "compilation_cache"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", *TINY_DIGITS, f"--workdir={single}"], cwd=REPO,
        env=_env(cache, XLA_FLAGS=xla_flags(2)), capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    launcher = subprocess.Popen(_launch(multi), cwd=REPO, env=_env(cache), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    # Stop once both processes have written the checkpoint of step 10 (orbax renames a finished save);
    # the evaluation at step 20 compiles next, which leaves seconds to interrupt the run.
    while time.time() < deadline and not (multi / "checkpoints" / "10").exists() and launcher.poll() is None:
        time.sleep(0.05)
    assert launcher.poll() is None, "the run ended before it could be interrupted"
    launcher.send_signal(signal.SIGTERM)  # the launcher stops both processes
    assert launcher.wait(timeout=60) == 130
    assert not (multi / "summary.json").exists()
    shards = {p.name for p in (multi / "checkpoints" / "10" / "state").iterdir()}
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= shards, "each process writes its own shards"

    result = subprocess.run(_launch(multi), cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=600)
    main_log, other_log = ((multi / "logs" / f"process_{i}.log").read_text() for i in range(2))
    assert result.returncode == 0, result.stderr[-2000:] + main_log[-3000:] + other_log[-3000:]
    assert "Resumed from the checkpoint at step" in main_log
    assert "Runtime: 2 process(es), 2 cpu device(s) in all, 1 local to process 0" in main_log
    # Process 1 logs no Python INFO (absl) and prints no progress bar or validation lines (tqdm).
    assert not [line for line in other_log.splitlines()
                if re.match(r"I\d{4} .*\.py:\d+\]", line) or "validation" in line or "train:" in line]

    assert json.loads((multi / "summary.json").read_text()) == json.loads((single / "summary.json").read_text())
    assert _deterministic(read_metrics(str(multi))) == _deterministic(read_metrics(str(single)))

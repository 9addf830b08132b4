"""experiments.seed_sweep end to end on a tiny triple-sum budget: one run per seed, the mean ± std
row of experiments.seeds over them, and a rerun that restores every seed without training it again."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments.seeds import mean_spread

REPO = pathlib.Path(__file__).resolve().parents[2]
SEEDS = [0, 1]


def run_sweep(workdir):
    return subprocess.run(
        [sys.executable, "-m", "experiments.seed_sweep", "--config=experiments/configs/triple_sum.py:softmax",
         "--config.train.num_epochs=1", "--config.task.options.num_train=256",
         "--config.task.options.num_validation=64", "--config.task.options.num_test=64",
         f"--seeds={','.join(map(str, SEEDS))}", f"--workdir={workdir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


def train_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["split"] == "train"]


@pytest.mark.slow
def test_sweep_trains_each_seed_reports_mean_std_and_resumes(tmp_path):
    first = run_sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((tmp_path / "seeds.json").read_text())
    assert result["seeds"] == SEEDS and [run["seed"] for run in result["runs"]] == SEEDS
    assert result["config"] == "experiments/configs/triple_sum.py:softmax"
    assert result["overrides"]["train.num_epochs"] == 1 and result["step"] == 4  # 256 sequences / 64
    for seed, run in zip(SEEDS, result["runs"]):
        run_dir = tmp_path / f"seed_{seed}"
        assert json.loads((run_dir / "config.json").read_text())["seed"] == seed
        summary = json.loads((run_dir / "summary.json").read_text())
        assert {split: run[split] for split in ("validation", "test")} == {
            split: summary[split] for split in ("validation", "test")}
        assert run["wall_time_s"] > 0
    # Each seed initialises (and orders the batches) differently: the trained models differ.
    for split in ("validation", "test"):
        assert result["runs"][0][split]["loss"] != result["runs"][1][split]["loss"]

    for split in ("validation", "test"):
        for name in ("accuracy", "loss"):
            values = np.array([run[split][name] for run in result["runs"]])
            reported = result["mean_std"][split][name]
            assert reported == mean_spread(values, digits=4)
            mean, std = map(float, reported.split(" ± "))
            np.testing.assert_allclose([mean, std], [values.mean(), values.std()], atol=5e-5)
    markdown = (tmp_path / "seeds.md").read_text()
    assert f"| mean ± std | {result['mean_std']['validation']['accuracy']} |" in markdown
    assert "--config.train.num_epochs=1" in markdown
    before = {seed: train_records(tmp_path / f"seed_{seed}") for seed in SEEDS}

    second = run_sweep(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    for seed in SEEDS:
        assert f"Seed {seed}: finished, evaluating" in second.stderr
        assert train_records(tmp_path / f"seed_{seed}") == before[seed]
    assert "Resumed from the checkpoint at step 4 of 4" in second.stderr
    assert json.loads((tmp_path / "seeds.json").read_text()) == result

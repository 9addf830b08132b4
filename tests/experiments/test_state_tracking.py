"""experiments.state_tracking end to end on a tiny budget: every study's table, JSON and plot, one
result per seed and test length, and a rerun that resumes from the trained runs without training."""

import json
import pathlib
import subprocess
import sys

import pytest

from experiments.configs import load_config
from experiments.configs.state_tracking import VARIANTS

REPO = pathlib.Path(__file__).resolve().parents[2]


def run_study(workdir):
    return subprocess.run(
        [sys.executable, "-m", "experiments.state_tracking", f"--workdir={workdir}", "--groups=Z2,S3",
         "--models=gated_negative,delta_product_negative", "--seeds=0,1", "--epochs=1", "--num_train=256",
         "--train_length=8", "--test_lengths=8,32", "--num_test_per_length=20"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.slow
def test_study_writes_every_group_model_seed_and_length_then_resumes(tmp_path):
    first = run_study(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((tmp_path / "state_tracking.json").read_text())
    assert result["test_lengths"] == [8, 32] and result["seeds"] == [0, 1]
    assert {group: list(rows) for group, rows in result["studies"].items()} == {
        "Z2": ["gated_negative"], "S3": ["delta_product_negative"]}
    for rows in result["studies"].values():
        for row in rows.values():
            assert row["num_parameters"] > 0
            for metric in ("final_accuracy", "token_accuracy"):
                assert set(row[metric]) == {"8", "32"}
                assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in row[metric].values())
    per_run = json.loads((tmp_path / "S3" / "delta_product_negative" / "seed_1" / "by_length.json").read_text())
    assert per_run["by_length"]["32"]["num_sequences"] == 20
    markdown = (tmp_path / "state_tracking.md").read_text()
    assert "**S3** (chance 0.167)" in markdown and "| gated_negative |" in markdown
    assert (tmp_path / "state_tracking.png").stat().st_size > 5_000

    second = run_study(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "training in" not in second.stderr
    assert json.loads((tmp_path / "state_tracking.json").read_text()) == result


@pytest.mark.parametrize("model", sorted(VARIANTS))
def test_every_model_config_validates(model):
    from jaxattn.train.config import validate_config

    validate_config(load_config("state_tracking", model))

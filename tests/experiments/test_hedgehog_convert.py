"""experiments.hedgehog_convert end to end on a tiny budget: every stage runs and reports."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_conversion_runs_every_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.hedgehog_convert", f"--workdir={tmp_path}", "--teacher_epochs=1",
         "--finetune_epochs=1", "--distill_steps=20"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"teacher", "hedgehog", "elu_plus_one"}
    assert results["hedgehog"]["distillation_loss"]["last"] < results["hedgehog"]["distillation_loss"]["first"]
    for name in ("hedgehog", "elu_plus_one"):
        for stage in ("converted", "finetuned"):
            assert 0.0 <= results[name][stage]["accuracy"] <= 1.0
    assert "| softmax teacher |" in (tmp_path / "results.md").read_text()

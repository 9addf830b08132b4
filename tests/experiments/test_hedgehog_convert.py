"""experiments.hedgehog_convert end to end on a tiny budget over two seeds: every stage runs, and the
report's recovery, mean and spread are the ratios and statistics of the accuracies it reports."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments.hedgehog_report import add_recovery, markdown, summarise
from experiments.seeds import seed_summary

REPO = pathlib.Path(__file__).resolve().parents[2]


def _seed_result(teacher, converted, finetuned):
    fit = {"teacher_entropy": 1.0, "teacher_max": 0.5, "kl": 0.2, "total_variation": 0.3, "top_key_agreement": 0.9}
    return {"teacher": {"accuracy": teacher},
            "hedgehog": {"converted": {"accuracy": converted}, "finetuned": {"accuracy": finetuned},
                         "distillation_loss": {"first": 9.0, "last": 5.0},
                         "attention_fit": {"identity_maps": fit, "distilled_maps": fit}}}


def test_report_recovery_is_per_seed_and_spread_is_the_population_std():
    per_seed = {"0": add_recovery(_seed_result(0.96, 0.90, 0.94), ["hedgehog"]),
                "1": add_recovery(_seed_result(0.80, 0.80, 0.60), ["hedgehog"])}
    np.testing.assert_allclose(list(per_seed["1"]["hedgehog"]["recovery"].values()), [1.0, 0.75])
    summary = summarise(per_seed, ["hedgehog"])
    recovery = summary["hedgehog"]["recovery_finetuned"]
    np.testing.assert_allclose(recovery["values"], [0.94 / 0.96, 0.75])
    np.testing.assert_allclose(recovery["mean"], np.mean(recovery["values"]))
    np.testing.assert_allclose(recovery["std"], np.std(recovery["values"], ddof=0))
    assert seed_summary([0.5])["std"] == 0.0
    table = markdown({"students": ["hedgehog"], "per_seed": per_seed, "summary": summary})
    assert "| 1 | 0.8000 | 0.8000 | 0.6000 | 100.0 % | 75.0 % |" in table
    assert f"| {100 * recovery['mean']:.1f} ± {100 * recovery['std']:.1f} % |" in table


@pytest.mark.slow
def test_conversion_runs_every_stage_for_each_seed(tmp_path):
    # Both seeds trace the same programs: a compilation cache lets the second reuse the first's.
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.hedgehog_convert", f"--workdir={tmp_path}", "--seeds=0,1",
         "--recipe=tiny", "--teacher_epochs=1", "--finetune_epochs=1", "--distill_steps=8", "--fit_examples=16"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results_tiny.json").read_text())
    assert list(results["per_seed"]) == ["0", "1"] and results["flags"]["distill_steps"] == 8
    for seed in ("0", "1"):
        assert (tmp_path / f"seed_{seed}" / "teacher").is_dir()
        assert (tmp_path / f"seed_{seed}" / "tiny" / "hedgehog_maps.msgpack").is_file()
        run = results["per_seed"][seed]
        loss = run["hedgehog"]["distillation_loss"]
        assert loss["steps"] == 8 and loss["last"] < loss["first"]
        fit = run["hedgehog"]["attention_fit"]
        assert fit["distilled_maps"]["kl"] < fit["identity_maps"]["kl"] and len(fit["distilled_maps"]["layers"]) == 4
        for name in ("hedgehog", "elu_plus_one"):
            for stage in ("converted", "finetuned"):
                accuracy = run[name][stage]["accuracy"]
                assert 0.0 <= accuracy <= 1.0
                np.testing.assert_allclose(run[name]["recovery"][stage], accuracy / run["teacher"]["accuracy"])
    for name in ("hedgehog", "elu_plus_one"):
        recovery = results["summary"][name]["recovery_finetuned"]
        values = [results["per_seed"][seed][name]["recovery"]["finetuned"] for seed in ("0", "1")]
        np.testing.assert_allclose(recovery["mean"], np.mean(values))
        np.testing.assert_allclose(recovery["std"], np.std(values, ddof=0))
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| mean ± std |" in table and table.count("\n| 0 |") == 2

"""experiments.lmul_precision end to end on a tiny budget, and its error statistics on known inputs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments.lmul_precision import product_methods, relative_errors
from experiments.seeds import mean_spread

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_error_statistics_of_exactly_representable_products():
    x = np.array([1.5, 2.0, -3.0, 0.0], np.float32)
    y = np.array([1.25, 0.5, 1.0, 7.0], np.float32)
    # bf16 represents these operands and products exactly; the zero product is left out.
    errors = relative_errors(product_methods()["bf16"](x, y), x, y)
    assert errors == dict(mean=0.0, rms=0.0, max=0.0, count=3)
    # 3-bit L-Mul (offset 1/8) of 1.5 x 1.25: (1 + .5 + .25 + .125) = 1.875 against 1.875: exact;
    # of 2 x 0.5: (1 + 1/8) against 1: 12.5 %; of -3 x 1: -(1 + .5 + 1/8) 2 = -3.25 against -3: 8.33 %.
    errors = relative_errors(product_methods()["L-Mul 3-bit (paper offset)"](x, y), x, y)
    np.testing.assert_allclose([errors["mean"], errors["max"]], [(0 + 0.125 + 0.25 / 3) / 3, 0.125])


@pytest.mark.slow
def test_study_runs_every_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.lmul_precision", f"--workdir={tmp_path}", "--epochs=1",
         "--finetune_epochs=1", "--samples=2000", "--eval_mantissa_bits=3", "--seeds=0,1", "--num_layers=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    products = json.loads((tmp_path / "products.json").read_text())
    assert len(products) == 6 * 2 + 3
    for by_distribution in products.values():
        assert set(by_distribution) == {"uniform mantissas", "gaussian", "trained weights x activations"}
    # bf16 rounds operands and product to 8 significant bits: mean relative error near 2^-9 * 3 / 2.
    assert 0.001 < products["bf16"]["gaussian"]["mean"] < 0.004
    models = json.loads((tmp_path / "models.json").read_text())
    assert {"exact", "L-Mul 3-bit attention products", "fp8 e4m3, every product"} <= set(models)
    assert (tmp_path / "products.png").stat().st_size > 5_000
    markdown = (tmp_path / "models.md").read_text()
    assert "| exact |" in markdown
    # Each seed trains its own exact model (in seed_K/) and fine-tunes it; the table reports mean ± std.
    for name, by_seed in models.items():
        assert by_seed["seeds"] == [0, 1] and len(by_seed["accuracy"]) == len(by_seed["loss"]) == 2
        assert f"| {name} | {mean_spread(by_seed['accuracy'], digits=4)} |" in markdown
    assert models["exact"]["loss"][0] != models["exact"]["loss"][1]
    for seed in (0, 1):
        config = json.loads((tmp_path / f"seed_{seed}" / "exact" / "config.json").read_text())
        assert config["seed"] == seed and config["model"]["num_layers"] == 1
        assert (tmp_path / f"seed_{seed}" / "finetune_lmul" / "summary.json").exists()

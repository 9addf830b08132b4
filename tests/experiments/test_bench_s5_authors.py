"""experiments.bench_s5_authors: a clear refusal without the S5 authors' checkout, and (where one is
given in ``S5_AUTHORS_REPO``) the two layers agreeing on a tiny shape."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments.s5_authors import load_authors_ssm

REPO = pathlib.Path(__file__).resolve().parents[2]
AUTHORS_REPO = os.environ.get("S5_AUTHORS_REPO")


@pytest.mark.parametrize("path", [None, "", "/nonexistent/S5"])
def test_missing_checkout_is_refused_clearly(path):
    with pytest.raises(FileNotFoundError, match=r"not a checkout of github.com/lindermanlab/S5 \(no s5/ssm.py"):
        load_authors_ssm(path)


def test_command_line_without_checkout_says_what_to_pass(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench_s5_authors", f"--s5_repo={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "--s5_repo=" in result.stderr and "no s5/ssm.py there" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not AUTHORS_REPO, reason="set S5_AUTHORS_REPO to a checkout of github.com/lindermanlab/S5")
def test_layers_agree_on_a_tiny_shape(tmp_path):
    out = tmp_path / "s5_vs_authors"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench_s5_authors", f"--s5_repo={AUTHORS_REPO}", "--shapes=33x6x8x2x2",
         "--repeats=1", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    # Same parameters and the same float32 operations up to their order.
    assert row["max_abs_diff_output"] < 1e-5 and row["max_rel_diff_gradients"] < 1e-5
    assert row["speedup_forward_backward"] > 0
    assert "| 33 | 6 | 8 | 2 | 2 |" in out.with_suffix(".md").read_text()

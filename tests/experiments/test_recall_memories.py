"""experiments.recall_memories end to end on a tiny budget: a hybrid language model (three Gated
DeltaNet layers, one softmax attention layer) trains; the table and record hold what the run reports,
and --report_only rebuilds them from finished runs. (A MoM model's train step:
tests/models/test_hybrid_stacks.py.)"""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def recall_memories(*flags):
    return subprocess.run([sys.executable, "-m", "experiments.recall_memories", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_hybrid_language_model_trains_and_is_reported(tmp_path):
    done = recall_memories(f"--workdir={tmp_path}", "--models=hybrid", "--pairs=4", "--seeds=0", "--num_epochs=1",
                           "--num_train=128", "--num_test=32")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "recall_memories.json").read_text())
    assert [(cell["model"], cell["num_pairs"]) for cell in result["cells"]] == [("hybrid", 4)]
    for cell in result["cells"]:
        summary = json.loads((tmp_path / f"{cell['model']}_pairs4" / "seed_0" / "summary.json").read_text())
        assert cell["test_accuracy"] == [summary["test"]["accuracy"]] and cell["steps"] == 2
        assert cell["mean"] == summary["test"]["accuracy"] and cell["std"] == 0.0
    config = json.loads((tmp_path / "hybrid_pairs4" / "seed_0" / "config.json").read_text())
    assert config["model"]["mixer_pattern"] == "mixer,mixer,mixer,attention"
    table = (tmp_path / "recall_memories.md").read_text()
    assert f"| hybrid | {result['cells'][0]['num_parameters']:,} | {result['cells'][0]['mean']:.4f} ± 0.0000 (n = 1) |" in table
    assert (tmp_path / "recall_memories.png").read_bytes()[:4] == b"\x89PNG"

    # Reporting only: the finished runs as they are, nothing trained, unrun cells named.
    report = recall_memories(f"--workdir={tmp_path}", f"--out_dir={tmp_path / 'report'}", "--models=hybrid,softmax",
                             "--pairs=4,8", "--seeds=0,1", "--num_epochs=1", "--report_only")
    assert report.returncode == 0, report.stderr[-3000:]
    reported = json.loads((tmp_path / "report" / "recall_memories.json").read_text())
    assert reported["cells"] == [result["cells"][0]]
    assert not (tmp_path / "softmax_pairs4").exists() and not (tmp_path / "hybrid_pairs8").exists()
    assert "| hybrid |" in (tmp_path / "report" / "recall_memories.md").read_text()
    assert "not run |" in (tmp_path / "report" / "recall_memories.md").read_text()

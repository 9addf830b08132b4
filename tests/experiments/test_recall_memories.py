"""experiments.recall_memories on a tiny budget: a MoM language model and a hybrid one (three Gated
DeltaNet layers, one softmax attention layer) train; the table and record hold what the runs report."""

import json

import pytest

from experiments.outputs import write_outputs
from experiments.recall_memories import plot, run, write_markdown

TINY_TASK = dict(num_train=64, num_validation=32, num_test=32)
TINY_TRAIN = dict(batch_size=32, eval_batch_size=32)


@pytest.mark.slow
def test_mom_and_hybrid_language_models_train_and_are_reported(tmp_path):
    result = run(["mom", "hybrid"], [4], [0], str(tmp_path), num_epochs=1, task_options=TINY_TASK,
                 train_options=TINY_TRAIN)
    write_outputs(result, str(tmp_path), "recall_memories", write_markdown, plot)
    assert [(cell["model"], cell["num_pairs"]) for cell in result["cells"]] == [("mom", 4), ("hybrid", 4)]
    for cell in result["cells"]:
        summary = json.loads((tmp_path / f"{cell['model']}_pairs4" / "seed_0" / "summary.json").read_text())
        assert cell["test_accuracy"] == [summary["test"]["accuracy"]] and cell["steps"] == 2
        assert cell["mean"] == summary["test"]["accuracy"] and cell["std"] == 0.0
    config = json.loads((tmp_path / "hybrid_pairs4" / "seed_0" / "config.json").read_text())
    assert config["model"]["mixer_pattern"] == "mixer,mixer,mixer,attention"
    train = [json.loads(line) for line in (tmp_path / "mom_pairs4" / "seed_0" / "metrics.jsonl").read_text().splitlines()]
    assert any("aux_loss" in record for record in train)  # the balance loss is logged
    table = (tmp_path / "recall_memories.md").read_text()
    assert f"| mom | {result['cells'][0]['num_parameters']:,} | {result['cells'][0]['mean']:.4f} ± 0.0000 |" in table
    assert (tmp_path / "recall_memories.png").stat().st_size > 0

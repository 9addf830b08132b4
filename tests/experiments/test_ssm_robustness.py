"""The PTD robustness study's parts: each model's config, the noise frequencies, the evaluation
under noise inside the layers, and the report's mean ± std over seeds."""

import jax
import pytest

from experiments.robustness_study import MODELS, evaluate_under_noise, model_config, spike_frequency, write_markdown
from jaxattn.data import load_task
from jaxattn.train import evaluate_variables
from jaxattn.train.config import validate_config
from jaxattn.train.loop import build_experiment


def test_the_paper_frequency_is_the_top_spike_of_the_32_state_legs_spectrum():
    assert spike_frequency(32) == pytest.approx(325.4, abs=0.05)  # the PTD paper's omega
    assert spike_frequency(8) < spike_frequency(16) < spike_frequency(32)


@pytest.mark.parametrize("task", ["smnist", "digits"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_configs(task, name):
    config = model_config(task, name, epochs=3, seed=7, train_ssm=False)
    validate_config(config)
    options = config.model.mixer_options
    assert config.task.name == task and config.seed == 7 and config.train.num_epochs == 3
    assert config.optimizer.ssm_lr == 0.0  # A, B and dt frozen, as the paper trains
    assert (config.model.mixer, options.state_size) == (MODELS[name][0], 32)
    assert options.causal is False and options.dt_max == (0.1 if task == "smnist" else 1.0)
    ptd = name.endswith("PTD")
    assert (options.spectrum if name.startswith("S4") else options.ssm_init) == ("ptd" if ptd else
                                                                                 "legs" if name == "S4D" else "hippo")
    assert model_config(task, name, epochs=3, seed=7, train_ssm=True).optimizer.ssm_lr > 0


def test_evaluation_under_noise_starts_from_the_clean_accuracy_and_degrades():
    config = model_config("digits", "S4D", epochs=1, seed=0, train_ssm=False)
    config.model.update(d_model=16, num_layers=2)
    state = build_experiment(config).state
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    test = load_task("digits").splits["test"]
    accuracies = evaluate_under_noise(config, variables, test, omegas=[325.4, 19.9], amplitudes=[0, 30.0],
                                      noise_seed=0)
    clean = evaluate_variables(config, variables, {"test": test})["test"]["accuracy"]
    assert set(accuracies) == {"325.4", "19.9"}
    for omega, (at_zero, at_thirty) in accuracies.items():
        assert at_zero == clean
        assert at_thirty != clean  # noise thirty times the inputs' scale changes the predictions


def test_report_gives_mean_and_spread_over_seeds(tmp_path):
    result = dict(task="smnist", seq_len=784, epochs=5, seeds=[0, 1], train_ssm=False, omegas=[325.4],
                  amplitudes=[0.0, 0.1], rows=[dict(model="S4D", omega=325.4, accuracy=[[0.9, 0.5], [0.8, 0.3]])])
    write_markdown(result, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "| S4D | 325.4 | 0.850 ± 0.050 | 0.400 ± 0.100 |" in text
    assert "frozen" in text and "seeds [0, 1]" in text

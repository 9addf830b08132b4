"""The PTD robustness study's parts, without flags (importable by tests and notebooks): the models,
their configs, the noise frequencies, the evaluation under noise and the report.

The entry point and the protocol: ``experiments/ssm_robustness.py``.
"""

import numpy as np

from experiments.configs import load_config
from experiments.seeds import mean_spread
from jaxattn.nn.s4d import s4d_spectrum
from jaxattn.nn.ssm_input_noise import ssm_input_noise
from jaxattn.train import evaluate_variables
from jaxattn.train.config import mixer_options
from jaxattn.train.plots import pyplot, save_figure

TASKS = {"smnist": 5, "digits": 30}  # task -> default epochs
MODELS = {  # name -> (mixer, options, the LegS size whose spike sets omega)
    "S4D": ("s4d", dict(state_size=32, spectrum="legs"), 32),
    "S4-PTD": ("s4d", dict(state_size=32, spectrum="ptd"), 32),
    "S5": ("s5", dict(state_size=32, blocks=4, ssm_init="hippo", conj_sym=True), 8),
    "S5-PTD": ("s5", dict(state_size=32, blocks=4, ssm_init="ptd", conj_sym=False), 8),
}




def spike_frequency(state_size: int) -> float:
    """The largest imaginary part of the LegS spectrum of size ``state_size``: where a diagonal
    (S4D / S5) layer's transfer function has its largest spike."""
    return float(np.abs(s4d_spectrum("legs", state_size)[0].imag).max())


def model_config(task: str, name: str, epochs: int, seed: int, train_ssm: bool):
    mixer, options, _ = MODELS[name]
    if task == "smnist":
        config = load_config("smnist", f"smnist,model={mixer},num_epochs={epochs}")
    else:
        config = load_config("s5_digits", f"num_epochs={epochs}")
    # The task config's timescales and direction, this model's layer and spectrum.
    kept = {key: config.model.mixer_options[key] for key in ("causal", "dt_min", "dt_max")}
    config.model.mixer = mixer
    config.model.mixer_options = mixer_options(mixer, **kept, **options)
    config.seed = seed
    if not train_ssm:
        config.optimizer.ssm_lr = 0.0
    return config


def evaluate_under_noise(config, variables, test, omegas, amplitudes, noise_seed) -> dict:
    """``{omega: [accuracy per amplitude]}`` (amplitude 0: the clean test set)."""
    clean = evaluate_variables(config, variables, {"test": test})["test"]["accuracy"]
    accuracies = {}
    for omega in omegas:
        accuracies[f"{omega:g}"] = []
        for amplitude in amplitudes:
            if amplitude == 0:
                accuracies[f"{omega:g}"].append(clean)
                continue
            with ssm_input_noise(omega, amplitude, noise_seed):  # traced inside: the noise is in the program
                accuracies[f"{omega:g}"].append(evaluate_variables(config, variables, {"test": test})["test"]["accuracy"])
    return accuracies


def write_markdown(result: dict, path: str) -> None:
    amplitudes = result["amplitudes"]
    lines = [f"Test accuracy with a cosine of angular frequency omega (in each layer's time) added to every SSM "
             f"layer's input, amplitude eps x U(0, 1); task {result['task']} (L = {result['seq_len']}), "
             f"{result['epochs']} epochs, SSM parameters {'trained' if result['train_ssm'] else 'frozen'}, "
             f"seeds {result['seeds']} (mean ± std over seeds).", "",
             "| model | omega | " + " | ".join("clean" if a == 0 else f"eps={a:g}" for a in amplitudes) + " |",
             "|---|---:|" + "---:|" * len(amplitudes)]
    for row in result["rows"]:
        cells = " | ".join(mean_spread(per_seed) for per_seed in np.asarray(row["accuracy"]).T)
        lines.append(f"| {row['model']} | {row['omega']:g} | {cells} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(result: dict, path: str) -> None:
    omegas = sorted({row["omega"] for row in result["rows"]})
    figure, axes = pyplot().subplots(1, len(omegas), figsize=(4.2 * len(omegas), 3.6), sharey=True,
                                     constrained_layout=True, squeeze=False)
    for axis, omega in zip(axes[0], omegas):
        for row in (r for r in result["rows"] if r["omega"] == omega):
            values = np.asarray(row["accuracy"])  # [seeds, amplitudes]
            axis.errorbar(result["amplitudes"], values.mean(0), yerr=values.std(0), marker="o", capsize=3,
                          label=row["model"])
        axis.set(title=f"omega = {omega:g}", xlabel="noise amplitude eps", xscale="symlog")
        axis.set_xscale("symlog", linthresh=0.1)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy ({result['task']}, mean ± std)")
    axes[0][0].legend()
    save_figure(figure, path, dpi=110)

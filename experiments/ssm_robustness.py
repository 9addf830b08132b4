"""The robustness study of the PTD paper (Yu et al.), CPU-sized: S5 against S5-PTD under Fourier-mode noise.

    python -m experiments.ssm_robustness --workdir=runs/ssm_robustness

Both models are the default experiment's S5 (``s5_digits.py``: 4 bidirectional layers, N = 32 in
4 blocks, sequential 8x8 digits of 64 steps), one with the HiPPO-N spectrum (conjugate pairs), one
with the perturb-then-diagonalise spectrum (``ssm_init="ptd"``, no conjugate symmetry), trained
alike. Their test inputs are then perturbed by one Fourier mode,

    ``x~_t = x_t + eps * std(x) * sqrt(2) * sin(2 pi k t / L + phi)``   (random phase per example),

whose power is ``eps^2`` times the inputs', for low and high frequencies ``k`` (``--modes``) and
amplitudes ``--amplitudes``; the paper's claim is that a diagonalised HiPPO (S4D, S5) is fragile
to high-frequency modes where PTD is not. Writes ``robustness.json``, ``.md`` and ``.png``
(accuracy against eps, a panel per mode). Training resumes from the sub-directories when rerun.
"""

import os

import jax
import numpy as np
from absl import app, flags, logging

from experiments.configs import load_config
from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from jaxattn.data import load_task
from jaxattn.data.perturbations import fourier_noise
from jaxattn.train import evaluate_variables, restore_variables, train_and_evaluate
from jaxattn.train.plots import pyplot, save_figure

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (trained models in sub-directories).")
_EPOCHS = flags.DEFINE_integer("epochs", 60, "Training epochs of each model.")
_MODES = flags.DEFINE_list("modes", ["1", "8", "24", "31"], "Fourier modes k (L = 64: 32 is the highest).")
_AMPLITUDES = flags.DEFINE_list("amplitudes", ["0", "0.25", "0.5", "1", "2"], "Noise amplitudes eps (x std).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the noise phases.")
flags.mark_flag_as_required("workdir")

MODELS = {"S5": dict(ssm_init="hippo", conj_sym=True), "S5-PTD": dict(ssm_init="ptd", conj_sym=False)}


def model_config(name: str):
    config = load_config("s5_digits", f"num_epochs={_EPOCHS.value}")
    config.model.mixer_options.update(MODELS[name])
    return config


def write_markdown(result: dict, path: str) -> None:
    amplitudes = result["amplitudes"]
    lines = [f"Test accuracy under one Fourier mode of noise (amplitude eps x the inputs' std, random phase), "
             f"sequential 8x8 digits (L = 64), {result['epochs']} epochs per model.", "",
             "| model | mode k | " + " | ".join(f"eps={a:g}" for a in amplitudes) + " |",
             "|---|---:|" + "---:|" * len(amplitudes)]
    for row in result["rows"]:
        lines.append(f"| {row['model']} | {row['mode']} | " + " | ".join(f"{a:.3f}" for a in row["accuracy"]) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(result: dict, path: str) -> None:
    modes = result["modes"]
    figure, axes = pyplot().subplots(1, len(modes), figsize=(3.6 * len(modes), 3.4), sharey=True,
                                     constrained_layout=True)
    for axis, mode in zip(np.atleast_1d(axes), modes):
        for row in (r for r in result["rows"] if r["mode"] == mode):
            axis.plot(result["amplitudes"], row["accuracy"], "o-", label=row["model"])
        axis.set(title=f"mode k = {mode}", xlabel="noise amplitude eps")
        axis.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend()
    save_figure(figure, path, dpi=110)


def main(argv):
    start_main(argv)
    modes, amplitudes = [int(k) for k in _MODES.value], [float(a) for a in _AMPLITUDES.value]
    rows = []
    for name in MODELS:
        config = model_config(name)
        workdir = os.path.join(_WORKDIR.value, name.lower().replace("-", "_"))
        summary = train_and_evaluate(config, workdir)
        logging.info("%s: test accuracy %.4f", name, summary["test"]["accuracy"])
        variables = jax.device_get(restore_variables(config, workdir))
        test = load_task(config.task.name, **config.task.options).splits["test"]
        for mode in modes:
            rng = np.random.default_rng((_SEED.value, mode))  # the same noise for both models
            splits = {f"{amplitude:g}": dict(test, inputs=fourier_noise(test["inputs"], mode, amplitude, rng))
                      for amplitude in amplitudes}
            results = evaluate_variables(config, variables, splits)
            accuracy = [results[f"{amplitude:g}"]["accuracy"] for amplitude in amplitudes]
            rows.append(dict(model=name, mode=mode, accuracy=accuracy))
            logging.info("%s, mode %d: %s", name, mode, " ".join(f"{a:.3f}" for a in accuracy))
    result = dict(epochs=_EPOCHS.value, modes=modes, amplitudes=amplitudes, rows=rows)
    write_outputs(result, _WORKDIR.value, "robustness", write_markdown, write_plot)


if __name__ == "__main__":
    app.run(main)

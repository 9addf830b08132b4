"""The PTD paper's robustness study (Yu et al.): diagonal SSMs against their PTD versions under noise
inside the layers, several seeds, on sequential MNIST (length 784) or sequential 8x8 digits (64).

    python -m experiments.ssm_robustness --task=smnist --seeds=0,1,2 --workdir=runs/ssm_robustness_smnist

The protocol follows the paper's robustness script:
  * models: S4D-LegS against S4-PTD (both 32 x 32 HiPPO-LegS, as the paper's; the S4D keeps its
    16 conjugate pairs, S4-PTD has 32 modes) and S5 against S5-PTD (``state_size=32`` in 4 blocks);
    the task config's width, depth and schedule (``smnist.py`` / ``s5_digits.py``);
  * trained on clean data with the state matrix, ``B`` and the step sizes frozen at their
    initialisation (``ssm_lr=0``; ``--train_ssm`` trains them too), as the paper does;
  * tested with one cosine of angular frequency ``omega`` in each layer's own time added to every
    SSM layer's input, amplitude ``eps * U(0, 1)`` per example and feature
    (:mod:`jaxattn.nn.ssm_input_noise`; the paper: ``omega = 325.4``, ``eps = 0.1``). ``omega`` is
    taken at the largest spike of each diagonal model's transfer function, the largest imaginary
    part of its LegS spectrum: 325.4 for the 32 x 32 S4D (the paper's value), S5's 8 x 8 blocks' own.

Writes ``robustness.json``, ``.md`` and ``.png`` (accuracy against ``eps``, a panel per ``omega``,
mean and spread over seeds). Each training resumes from ``workdir/MODEL/seed_K`` when rerun.
"""

import os

import jax
from absl import app, flags, logging

from experiments.logging_setup import start_main
from experiments.outputs import write_outputs
from experiments.robustness_study import (MODELS, TASKS, evaluate_under_noise, model_config, spike_frequency,
                                          write_markdown, write_plot)
from experiments.seeds import SEEDS_HELP, parse_seeds
from jaxattn.data import load_task
from jaxattn.nn.ssm_input_noise import PAPER_AMPLITUDE
from jaxattn.train import restore_variables, train_and_evaluate

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (trained models in sub-directories).")
_TASK = flags.DEFINE_enum("task", "smnist", list(TASKS), "Sequential MNIST (L = 784) or 8x8 digits (L = 64).")
_MODELS = flags.DEFINE_list("models", list(MODELS), f"Models, of {list(MODELS)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], SEEDS_HELP)
_EPOCHS = flags.DEFINE_integer("epochs", 0, f"Training epochs per model; 0: {TASKS}.")
_AMPLITUDES = flags.DEFINE_list("amplitudes", ["0", "0.1", "0.3", "1"], "Noise amplitudes eps (0.1: the paper's).")
_TRAIN_SSM = flags.DEFINE_bool("train_ssm", False, "Train the state matrix, B and dt too (the paper freezes them).")
_NOISE_SEED = flags.DEFINE_integer("noise_seed", 0, "Seed of the noise amplitudes U(0, 1).")
flags.mark_flag_as_required("workdir")


def main(argv):
    start_main(argv)
    unknown = sorted(set(_MODELS.value) - set(MODELS))
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; known: {list(MODELS)}")
    seeds, amplitudes = parse_seeds(_SEEDS.value), [float(a) for a in _AMPLITUDES.value]
    epochs = _EPOCHS.value or TASKS[_TASK.value]
    omegas = sorted({round(spike_frequency(MODELS[name][2]), 1) for name in _MODELS.value})
    logging.info("noise frequencies omega %s, amplitudes %s (the paper: omega 325.4, eps %g)", omegas, amplitudes,
                 PAPER_AMPLITUDE)
    rows, test, seq_len = [], None, None
    for name in _MODELS.value:
        per_seed = []
        for seed in seeds:
            config = model_config(_TASK.value, name, epochs, seed, _TRAIN_SSM.value)
            workdir = os.path.join(_WORKDIR.value, name.lower().replace("-", "_"), f"seed_{seed}")
            train_and_evaluate(config, workdir)
            if test is None:
                task = load_task(config.task.name, **config.task.options)
                test, seq_len = task.splits["test"], task.seq_len
            variables = jax.device_get(restore_variables(config, workdir))
            per_seed.append(evaluate_under_noise(config, variables, test, omegas, amplitudes, _NOISE_SEED.value))
            logging.info("%s seed %d: %s", name, seed, per_seed[-1])
        for omega in omegas:
            rows.append(dict(model=name, omega=omega, accuracy=[run[f"{omega:g}"] for run in per_seed]))
    result = dict(task=_TASK.value, seq_len=seq_len, epochs=epochs, seeds=seeds, train_ssm=_TRAIN_SSM.value,
                  omegas=omegas, amplitudes=amplitudes, rows=rows)
    write_outputs(result, _WORKDIR.value, "robustness", write_markdown, write_plot)


if __name__ == "__main__":
    app.run(main)

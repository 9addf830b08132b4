# %% [markdown]
# # Train a small model from a config, in a notebook
#
# `python -m experiments.train --config=experiments/configs/NAME.py:ARG --workdir=DIR` is a thin shell
# around the library: a config file's `get_config(ARG)` returns an `ml_collections.ConfigDict`, and
# `jaxattn.train.train_and_evaluate(config, workdir)` builds the task, model, optimiser and mesh from
# it, trains, evaluates, checkpoints, and writes `metrics.jsonl` and `summary.json` into the work
# directory. This notebook does the same from Python: it loads the default experiment's config
# (`s5_digits`, an S5 classifier of sequential 8x8 digits), shrinks it to a few dozen steps, trains
# it in a temporary work directory and plots the loss and accuracy curves.
#
# Open it as a notebook with `pip install jupytext jupyterlab` and then, in JupyterLab, *Open With ->
# Notebook* on this `.py` file (or convert it: `jupytext --to ipynb notebooks/train_small_model.py`).

# %%
import json
import os
import tempfile

import jax
import matplotlib.pyplot as plt

from experiments.configs import load_config
from jaxattn.train import train_and_evaluate
from jaxattn.train.metrics import read_metrics

# %% [markdown]
# ## The config
#
# `load_config(NAME, ARG)` is `experiments/configs/NAME.py:ARG`; the argument grammar is
# `[VARIANT][,key=value ...]` (here `num_epochs=3`). Any field can then be changed in Python, as
# `--config.FIELD=VALUE` does on the command line; `train_and_evaluate` validates the whole config
# first and names a misspelt or ill-typed field.

# %%
config = load_config("s5_digits", "num_epochs=3")
config.model.num_layers = 2  # half the layers of the published setting: a quick demonstration
config.optimizer.update(lr=1e-2, ssm_lr=4e-3, warmup_epochs=0.5)  # a short run takes larger steps
config.model.dropout = 0.0
config.train.update(log_every_steps=5, eval_every_steps=10, checkpoint_every_steps=30)
print(config.model)

# %% [markdown]
# ## Training
#
# On a laptop's CPU this takes a few seconds. The work directory is what a command-line run would
# leave: rerunning `train_and_evaluate` with the same config and directory resumes from the latest
# checkpoint.

# %%
workdir = tempfile.mkdtemp(prefix="jaxattn_s5_digits_")
summary = train_and_evaluate(config, workdir)
print(json.dumps(summary, indent=1))
print(sorted(os.listdir(workdir)))

# %% [markdown]
# Three epochs of 20 steps take the model far past chance (10 %; about 87 % test accuracy), though
# not to the 99 % of the full 60-epoch, 4-layer run:

# %%
assert summary["step"] == 3 * 20, summary["step"]
assert summary["test"]["accuracy"] > 0.6, summary["test"]
print(f"test accuracy {summary['test']['accuracy']:.3f} on {jax.device_count()} device(s)")

# %% [markdown]
# ## Curves
#
# `metrics.jsonl` holds one record per log (`split="train"`), evaluation (`"validation"`) and final
# result; `jaxattn.train.metrics.read_metrics` reads them back. (`train_and_evaluate` also saves this
# plot as `curves.png`, through `jaxattn.train.plots.plot_training_curves`.)

# %%
records = read_metrics(workdir)
figure, axes = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
for split, style in (("train", "-"), ("validation", "o-")):
    rows = [r for r in records if r["split"] == split]
    for axis, key in zip(axes, ("loss", "accuracy")):
        axis.plot([r["step"] for r in rows], [r[key] for r in rows], style, label=split)
for axis, key in zip(axes, ("loss", "accuracy")):
    axis.set(xlabel="step", ylabel=key)
    axis.grid(alpha=0.3)
    axis.legend()
figure.savefig(os.path.join(workdir, "notebook_curves.png"), dpi=80)

train_losses = [r["loss"] for r in records if r["split"] == "train"]
assert train_losses[-1] < train_losses[0], train_losses

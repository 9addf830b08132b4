"""Train and evaluate a sequence model.

    python -m experiments.train --config=experiments/configs/s5_digits.py --workdir=runs/s5_digits

Override any field from the command line (``--config.train.num_epochs=5``); rerunning the same
command on the same ``--workdir`` resumes from its latest checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from experiments.logging_setup import show_own_info_only
from jaxattn.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, optionally with :ARG.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics, checkpoints and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    show_own_info_only()
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)

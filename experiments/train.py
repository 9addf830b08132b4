"""Train and evaluate a sequence model.

    python -m experiments.train --config=experiments/configs/s5_digits.py --workdir=runs/s5_digits

Override any field from the command line (``--config.train.num_epochs=5``); rerunning the same
command on the same ``--workdir`` resumes from its latest checkpoint.
"""

import logging as std_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

from jaxattn.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, optionally with :ARG.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics, checkpoints and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


class _OwnInfoOnly(std_logging.Filter):
    """Shows INFO records of this project only (not orbax's per-save chatter or JAX's backend
    probing); warnings and errors from anywhere still show."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno > std_logging.INFO or any(
            os.sep + package + os.sep in record.pathname for package in ("jaxattn", "experiments")
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)

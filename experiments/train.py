"""Train and evaluate a sequence model.

    python -m experiments.train --config=experiments/configs/s5_digits.py --workdir=runs/s5_digits

A config file takes an argument, ``NAME.py:[VARIANT][,key=value ...]`` in every config (e.g.
``--config=experiments/configs/lra.py:text,model=s4d``; the grammar is in ``experiments/configs``).
Override any field from the command line (``--config.train.num_epochs=5``); rerunning the same
command on the same ``--workdir`` resumes from its latest checkpoint.

Several processes (hosts) run the same command: ``--coordinator_address``, ``--num_processes`` and
``--process_id`` (or ``JAXATTN_*`` variables) connect them explicitly; on a TPU pod, in a SLURM job
step or under Open MPI they find each other on their own (``jaxattn.parallel.distributed``, and
``launch/`` for the launchers). ``--workdir`` must then be storage every host sees.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.logging_setup import start_main
from jaxattn.parallel import distributed
from jaxattn.train import train_and_evaluate
from jaxattn.train.checkpoint import Preempted

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, optionally with :[VARIANT][,key=value ...].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics, checkpoints and the summary.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()
# Exit status of a run stopped by SIGTERM after saving a checkpoint (128 + SIGTERM, as if killed).
EXIT_PREEMPTED = 143


def main(argv):
    start_main(argv)
    # Before anything touches a JAX backend: the runtime decides which devices this process sees.
    distributed.initialize_from_flags()
    distributed.check_shared_directory(_WORKDIR.value)
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except Preempted as stop:
        logging.warning("%s", stop)
        jax.distributed.shutdown()
        sys.exit(EXIT_PREEMPTED)
    # A clean shutdown waits for every process, so none exits while others still need it.
    jax.distributed.shutdown()


if __name__ == "__main__":
    app.run(main)

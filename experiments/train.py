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

from absl import app, flags
from ml_collections import config_flags

from experiments.logging_setup import start_main
from experiments.preemptible import run_preemptible
from jaxattn.parallel import distributed
from jaxattn.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, optionally with :[VARIANT][,key=value ...].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics, checkpoints and the summary.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
    start_main(argv)
    run_preemptible(lambda: train_and_evaluate(_CONFIG.value, _WORKDIR.value), _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)

"""The one way a training entry point (``experiments.train``, ``experiments.seed_sweep``) joins the
other processes of its job, runs, and ends: normally, or preempted after saving its checkpoint."""

import sys
from collections.abc import Callable

import jax
from absl import logging

from jaxattn.parallel import distributed
from jaxattn.train.checkpoint import Preempted

# Exit status of a run stopped by SIGTERM after saving a checkpoint (128 + SIGTERM, as if killed).
EXIT_PREEMPTED = 143


def run_preemptible(work: Callable[[], object], workdir: str) -> None:
    """Connects the processes (``--coordinator_address`` etc.), checks that every host sees
    ``workdir``, runs ``work()``; exits with `EXIT_PREEMPTED` if a SIGTERM stopped it."""
    # Before anything touches a JAX backend: the runtime decides which devices this process sees.
    distributed.initialize_from_flags()
    distributed.check_shared_directory(workdir)
    try:
        work()
    except Preempted as stop:
        logging.warning("%s", stop)
        jax.distributed.shutdown()
        sys.exit(EXIT_PREEMPTED)
    # A clean shutdown waits for every process, so none exits while others still need it.
    jax.distributed.shutdown()

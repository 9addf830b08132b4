"""Log set-up and argument check shared by the experiment entry points."""

import logging as std_logging
import os

from absl import app, logging


class _OwnInfoOnly(std_logging.Filter):
    """Passes INFO records of this project only (not orbax's per-save chatter or JAX's backend
    probing); warnings and errors from anywhere still pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno > std_logging.INFO or any(
            os.sep + package + os.sep in record.pathname for package in ("jaxattn", "experiments")
        )


def show_own_info_only() -> None:
    """Applies the filter to absl's handler (call at the start of ``main``)."""
    logging.get_absl_handler().addFilter(_OwnInfoOnly())


def start_main(argv) -> None:
    """The start of every experiment's absl ``main(argv)``: refuses positional arguments (``argv[0]``
    is the program; everything else is a flag) and applies :func:`show_own_info_only`."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    show_own_info_only()

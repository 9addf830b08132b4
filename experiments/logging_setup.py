"""Log set-up shared by the experiment entry points."""

import logging as std_logging
import os

from absl import logging


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

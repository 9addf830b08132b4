"""The suite's ``XLA_FLAGS`` (tests/conftest.py) for a process a test starts, with its own device count."""

import os
from typing import Optional

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def xla_flags(devices: Optional[int] = None) -> str:
    """This process's ``XLA_FLAGS`` (the same code generation) with ``devices`` fake CPU devices, or
    without the device count flag (one device) when None."""
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if not flag.startswith(DEVICE_COUNT_FLAG)]
    return " ".join(flags if devices is None else [*flags, f"{DEVICE_COUNT_FLAG}={devices}"])

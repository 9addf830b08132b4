"""Test set-up: 8 fake CPU devices (set before JAX starts) for the sharding tests, and the tiers.

The quick tier (``-m "not slow"``) runs every test once: a parametrized test on its first parameter
set only (the collection hook below marks the others ``slow``), and no test marked ``slow`` by hand
(the end-to-end experiment runs). The full suite, which CI runs, covers every parameter set.
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        if getattr(item, "callspec", None) is None:
            continue
        test = (item.nodeid.split("[")[0], item.originalname)
        if test in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(test)

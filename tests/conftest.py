"""Test set-up: 8 fake CPU devices (set before JAX starts) for the sharding tests, and the tiers.

The quick tier (``-m "not slow"``) runs every test once: a parametrized test on its first parameter
set only (the collection hook below marks the others ``slow``), and no test marked ``slow`` by hand
(the end-to-end experiment runs, which the full suite starts first). The full suite, which CI runs,
covers every parameter set.
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_collection_modifyitems(config, items):
    by_hand = {item.nodeid for item in items if item.get_closest_marker("slow")}
    # pytest-xdist hands tests to its workers in collection order: the end-to-end runs (marked slow
    # by hand, up to a minute or two each) go first, so that none of them is the last test of one
    # worker while the other has nothing left to do.
    items.sort(key=lambda item: item.nodeid not in by_hand)
    seen = set()
    for item in items:
        if getattr(item, "callspec", None) is None:
            continue
        test = (item.nodeid.split("[")[0], item.originalname)
        if test in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(test)

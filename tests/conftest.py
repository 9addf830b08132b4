"""Test set-up: 8 fake CPU devices (set before JAX starts) for the sharding tests, unoptimised
XLA:CPU code generation, a compilation cache per test process, and the tiers.

Many tests compile a program another test (or the first half of an interrupted run, or another seed
of a study's subprocess) compiled already: the same HLO for the same devices. A persistent
compilation cache, one fresh directory per test process (so no two processes write to it at once;
subprocesses a test starts inherit it), turns those compilations into loads of the same
executable; the numbers the tests check are those of the executable XLA built. A directory given
in ``JAX_COMPILATION_CACHE_DIR`` is used instead, and tests that start concurrent processes set
their own.

The suite is bound by XLA:CPU compile time (small programs, each run a few times), most of it LLVM
optimising the generated machine code. The tests turn that optimisation off
(``--xla_backend_optimization_level=0``, unless ``XLA_FLAGS`` sets a level): XLA's HLO passes are
unchanged, so the programs compute the same operations; they compile in about half the time and
run more slowly, which no test measures (test files of compiled ops and end-to-end runs took 25 to
50 % less time).

Tuned kernel block sizes in the machine's user cache (docs/autotune.md) would change which tiles the
kernel tests run; the suite turns that cache off (``JAXATTN_AUTOTUNE_CACHE=""``) unless a test sets
its own.

The quick tier (``-m "not slow"``) runs every test once: a parametrized test on its first parameter
set only (the collection hook below marks the others ``slow``), and no test marked ``slow`` by hand
(the end-to-end experiment runs). The full suite, which CI runs, covers every parameter set.
"""

import atexit
import os
import shutil
import tempfile

import pytest

from tests.xla_flags import xla_flags

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = xla_flags(8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxattn-test-compilation-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ["JAXATTN_AUTOTUNE_CACHE"] = ""


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        if getattr(item, "callspec", None) is None:
            continue
        test = (item.nodeid.split("[")[0], item.originalname)
        if test in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(test)

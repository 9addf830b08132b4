"""Comparisons shared by the tests (importable as ``numerics``: pytest puts ``tests/`` on the path)."""

import numpy as np


def relative_error(got, want) -> float:
    """``max |got - want| / max |want|`` in float64 (a tiny floor keeps all-zero ``want`` finite)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))

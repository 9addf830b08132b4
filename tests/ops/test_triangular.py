"""unit_lower_triangular_inverse against float64 inversion: every size class (one leaf, padded to a
power of two, several levels), and the ill-conditioned systems of the delta rule with beta near 2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import relative_error

from jaxattn.ops.triangular import unit_lower_triangular_inverse


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 16, 33, 64, 100])
def test_matches_float64_inverse(size):
    rng = np.random.default_rng(size)
    m = np.eye(size) + 0.3 * np.tril(rng.normal(size=(2, 3, size, size)), -1)
    got = unit_lower_triangular_inverse(jnp.asarray(m, jnp.float32))
    assert got.shape == m.shape
    assert relative_error(got, np.linalg.inv(m)) < 1e-5


def test_delta_rule_systems_with_beta_near_two():
    """``I + tril(diag(beta) K K^T, -1)`` with unit keys, beta in [1.9, 2] and keys close to each
    other (the inverse's entries grow fastest). Explicit inverses lose more than substitution: the
    solution's error is 1.2e-5 here with 4 x 4 leaves against 1.1e-6 for ``triangular_solve``; 8 x 8
    leaves give 5.5e-5 and 16 x 16 leaves 0.22 (the nilpotent powers outgrow the mantissa)."""
    keys = jax.random.split(jax.random.key(0), 4)
    base = jax.random.normal(keys[0], (1, 16))
    k = base + 0.01 * jax.random.normal(keys[1], (4, 64, 16))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    beta = jax.random.uniform(keys[2], (4, 64, 1), minval=1.9, maxval=2.0)
    m = jnp.eye(64) + jnp.tril(beta * (k @ jnp.swapaxes(k, -1, -2)), -1)
    rhs = jax.random.normal(keys[3], (4, 64, 32))
    exact = np.linalg.solve(np.asarray(m, np.float64), np.asarray(rhs, np.float64))
    got = unit_lower_triangular_inverse(m) @ rhs
    assert np.all(np.isfinite(got))
    assert relative_error(got, exact) < 3e-5

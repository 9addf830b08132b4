"""Discretisation of a diagonal continuous-time system ``x' = Lambda x + B u`` with step ``dt``.

docs/ssm.md#discretisation. Shapes: ``Lambda`` ``[P]`` complex, ``B`` ``[P, H]`` complex,
``step`` ``[P]`` positive; returns ``(Lambda_bar [P], B_bar [P, H])``.
"""

import jax
import jax.numpy as jnp


def discretize_zoh(lam: jax.Array, b: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zero-order hold: ``Lbar = exp(Lambda dt)``, ``Bbar = (Lbar - 1) / Lambda * B``."""
    lam_bar = jnp.exp(lam * step)
    return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * b


def discretize_bilinear(lam: jax.Array, b: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bilinear (Tustin): ``Lbar = (1 + dt Lambda/2) / (1 - dt Lambda/2)``, ``Bbar = dt / (1 - dt Lambda/2) * B``."""
    inverse = 1.0 / (1.0 - 0.5 * step * lam)
    return inverse * (1.0 + 0.5 * step * lam), (inverse * step)[:, None] * b


DISCRETIZATIONS = {"zoh": discretize_zoh, "bilinear": discretize_bilinear}

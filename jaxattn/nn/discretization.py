"""Discretisation of a diagonal continuous-time system ``x' = Lambda x + B u`` with step ``dt``.

docs/ssm.md#discretisation. Shapes: ``Lambda`` ``[P]`` complex, ``B`` ``[P, H]`` complex,
``step`` ``[P]`` positive; returns ``(Lambda_bar [P], B_bar [P, H])``.
"""

import jax

from jaxattn.ops import bilinear_transform, zero_order_hold


def discretize_zoh(lam: jax.Array, b: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zero-order hold: ``Lbar = exp(Lambda dt)``, ``Bbar = (Lbar - 1) / Lambda * B``."""
    lam_bar, gain = zero_order_hold(lam, step)
    return lam_bar, gain[:, None] * b


def discretize_bilinear(lam: jax.Array, b: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bilinear (Tustin): ``Lbar = (1 + dt Lambda/2) / (1 - dt Lambda/2)``, ``Bbar = dt / (1 - dt Lambda/2) * B``."""
    lam_bar, gain = bilinear_transform(lam, step)
    return lam_bar, gain[:, None] * b


DISCRETIZATIONS = {"zoh": discretize_zoh, "bilinear": discretize_bilinear}

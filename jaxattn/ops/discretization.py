"""Discretisation of a diagonal continuous-time system ``x' = Lambda x + B u`` with step ``dt``.

Each function returns ``(Lambda_bar, gain)`` with ``x_k = Lambda_bar x_{k-1} + gain B u_k``: the
discrete transition and the factor that turns ``B`` into ``B_bar = gain B``. Element-wise and
broadcasting: ``lam`` and ``step`` of any shapes that broadcast (per mode ``[P]`` with ``[P]`` steps
in S5, per feature ``[H, P]`` with ``[H, 1]`` steps in S4D and its convolution kernel). The
mathematics: docs/ssm.md.
"""

import jax
import jax.numpy as jnp


def zero_order_hold(lam: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zero-order hold (the input held constant over each step):
    ``Lambda_bar = exp(Lambda dt)``, ``gain = (Lambda_bar - 1) / Lambda``.

    Args:
      lam: ``Lambda``, complex (or real, nonzero), e.g. ``[H, P]``.
      step: ``dt`` > 0, broadcastable against ``lam`` (e.g. ``[H, 1]``).

    Returns:
      ``(Lambda_bar, gain)`` in ``lam``'s broadcast shape.

    Example::

        lam = jnp.array([-0.5 + 1j, -1.0 + 0j])
        lam_bar, gain = zero_order_hold(lam, jnp.array(0.1))  # b_bar = gain * b
    """
    lam_bar = jnp.exp(lam * step)
    return lam_bar, (lam_bar - 1.0) / lam


def bilinear_transform(lam: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bilinear (Tustin): ``Lambda_bar = (1 + dt Lambda / 2) / (1 - dt Lambda / 2)``,
    ``gain = dt / (1 - dt Lambda / 2)``. Shapes as :func:`zero_order_hold`.

    Example::

        lam_bar, gain = bilinear_transform(jnp.array([-0.5 + 1j]), jnp.array(0.1))
    """
    inverse = 1.0 / (1.0 - 0.5 * step * lam)
    return inverse * (1.0 + 0.5 * step * lam), inverse * step

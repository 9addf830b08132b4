"""Discretisation of a diagonal continuous-time system ``x' = Lambda x + B u`` with step ``dt``.

Each function returns ``(Lambda_bar, gain)`` with ``x_k = Lambda_bar x_{k-1} + gain B u_k``: the
discrete transition and the factor that turns ``B`` into ``B_bar = gain B``. Element-wise and
broadcasting: ``lam`` and ``step`` of any shapes that broadcast (per mode ``[P]`` with ``[P]`` steps
in S5, per feature ``[H, P]`` with ``[H, 1]`` steps in S4D and its convolution kernel). The
mathematics: docs/ssm.md.

``impl="xla"`` (the default, by ``"auto"``) evaluates the closed forms element-wise;
``impl="reference"`` goes back to the definitions on matrices: the zero-order hold as the matrix
exponential of the augmented system, the bilinear transform as dense linear solves with the diagonal
matrix ``diag(Lambda)``.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.dispatch import resolve_impl


def _zero_order_hold_xla(lam, step):
    lam_bar = jnp.exp(lam * step)
    return lam_bar, (lam_bar - 1.0) / lam


def _common(lam, step):
    """``lam`` and ``step`` broadcast to one shape, in their common (complex, for complex ``lam``) dtype."""
    dtype = jnp.result_type(lam, step)
    return jnp.broadcast_arrays(jnp.asarray(lam, dtype), jnp.asarray(step, dtype))


def _zero_order_hold_reference(lam, step):
    """Per entry, ``expm([[dt lam, dt], [0, 0]]) = [[Lambda_bar, gain], [0, 1]]``: the state and the
    held input evolve together, and the top-right block is ``int_0^dt exp(lam s) ds``."""
    lam, step = _common(lam, step)
    zero = jnp.zeros_like(lam)
    augmented = jnp.stack([jnp.stack([step * lam, step], -1), jnp.stack([zero, zero], -1)], -2)  # [..., 2, 2]
    flow = jax.scipy.linalg.expm(augmented.reshape(-1, 2, 2)).reshape(augmented.shape)
    return flow[..., 0, 0], flow[..., 0, 1]


def _bilinear_transform_xla(lam, step):
    inverse = 1.0 / (1.0 - 0.5 * step * lam)
    return inverse * (1.0 + 0.5 * step * lam), inverse * step


def _bilinear_transform_reference(lam, step):
    """``Abar = (I - dt/2 A)^{-1} (I + dt/2 A)``, ``Bbar = (I - dt/2 A)^{-1} dt B`` with the dense
    ``A = diag(Lambda)`` and ``dt = diag(step)`` over the last axis, by linear solves (``B = 1``)."""
    lam, step = _common(lam, step)
    shape = lam.shape
    lam, step = jnp.atleast_1d(lam), jnp.atleast_1d(step)
    eye = jnp.eye(lam.shape[-1], dtype=lam.dtype)
    half_step_a = eye * (0.5 * step * lam)[..., None, :]  # diag(dt/2 Lambda) [..., P, P]
    backward = eye - half_step_a
    a_bar = jnp.linalg.solve(backward, eye + half_step_a)
    b_bar = jnp.linalg.solve(backward, step[..., None])[..., 0]  # dt B with B = 1
    return jnp.diagonal(a_bar, axis1=-2, axis2=-1).reshape(shape), b_bar.reshape(shape)


_ZOH_IMPLEMENTATIONS = {"reference": _zero_order_hold_reference, "xla": _zero_order_hold_xla}
_BILINEAR_IMPLEMENTATIONS = {"reference": _bilinear_transform_reference, "xla": _bilinear_transform_xla}


def zero_order_hold(lam: jax.Array, step: jax.Array, *, impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """Zero-order hold (the input held constant over each step):
    ``Lambda_bar = exp(Lambda dt)``, ``gain = (Lambda_bar - 1) / Lambda``.

    Args:
      lam: ``Lambda``, complex (or real, nonzero), e.g. ``[H, P]``.
      step: ``dt`` > 0, broadcastable against ``lam`` (e.g. ``[H, 1]``).
      impl: ``"xla"`` (the closed form; ``"auto"``) or ``"reference"`` (the matrix exponential of
        ``[[dt Lambda, dt], [0, 0]]`` per entry).

    Returns:
      ``(Lambda_bar, gain)`` in ``lam``'s broadcast shape.

    Example::

        lam = jnp.array([-0.5 + 1j, -1.0 + 0j])
        lam_bar, gain = zero_order_hold(lam, jnp.array(0.1))  # b_bar = gain * b
    """
    return resolve_impl("zero_order_hold", impl, _ZOH_IMPLEMENTATIONS)(lam, step)


def bilinear_transform(lam: jax.Array, step: jax.Array, *, impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """Bilinear (Tustin): ``Lambda_bar = (1 + dt Lambda / 2) / (1 - dt Lambda / 2)``,
    ``gain = dt / (1 - dt Lambda / 2)``. Shapes as :func:`zero_order_hold`; ``impl``: ``"xla"`` (the
    closed form; ``"auto"``) or ``"reference"`` (dense solves with ``I - dt/2 diag(Lambda)``).

    Example::

        lam_bar, gain = bilinear_transform(jnp.array([-0.5 + 1j]), jnp.array(0.1))
    """
    return resolve_impl("bilinear_transform", impl, _BILINEAR_IMPLEMENTATIONS)(lam, step)

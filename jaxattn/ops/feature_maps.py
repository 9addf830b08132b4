"""Fixed feature maps ``phi`` of linear attention, ``phi(q) phi(k)^T ~ sim(q, k)``
(docs/linear_attention.md#feature-maps).

Each map acts on the last axis ``[..., D] -> [..., D']``. The trainable Hedgehog map is
``HedgehogFeatureMap`` in :mod:`jaxattn.nn.linear_attention` and ends in :func:`hedgehog_softmax`
below (docs/linear_attention.md#hedgehog).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def identity(x: jax.Array) -> jax.Array:
    """``phi(x) = x`` (D' = D)."""
    return x


def elu_plus_one(x: jax.Array) -> jax.Array:
    """``phi(x) = elu(x) + 1 > 0`` (Katharopoulos et al. 2020; D' = D)."""
    return jax.nn.elu(x) + 1.0


def relu(x: jax.Array) -> jax.Array:
    """``phi(x) = max(x, 0)`` (D' = D)."""
    return jax.nn.relu(x)


def taylor_exp(x: jax.Array) -> jax.Array:
    """Second-order Taylor features of ``exp`` (Based): ``[1, x, vec(x x^T) / sqrt(2)]``.

    ``phi(q) . phi(k) = 1 + q.k + (q.k)^2 / 2``, positive for any q, k. D' = 1 + D + D^2.
    """
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], -1) / jnp.sqrt(2.0).astype(x.dtype)
    return jnp.concatenate([jnp.ones((*x.shape[:-1], 1), x.dtype), x, outer], axis=-1)


def performer_positive(x: jax.Array, projection: jax.Array, *, stabilize_axes: tuple[int, ...] = ()) -> jax.Array:
    """Positive random features (Performer FAVOR+): ``exp(x W - |x|^2 / 2) / sqrt(M)``.

    ``E_W[phi(q) . phi(k)] = exp(q . k)`` for ``W [D, M]`` with i.i.d. standard normal entries.
    ``stabilize_axes``: subtract the maximum exponent over these axes (use the feature axis for
    queries and the time axis for keys; a per-row constant cancels in normalised attention).
    """
    exponent = x @ projection - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    if stabilize_axes:
        exponent = exponent - jax.lax.stop_gradient(jnp.max(exponent, axis=stabilize_axes, keepdims=True))
    return jnp.exp(exponent) / jnp.sqrt(jnp.asarray(projection.shape[-1], x.dtype))


def hedgehog_softmax(projected: jax.Array) -> jax.Array:
    """Hedgehog's activation ``softmax([z, -z])`` over features of ``z = x W`` (Zhang et al. 2024; D' = 2D)."""
    return jax.nn.softmax(jnp.concatenate([projected, -projected], axis=-1), axis=-1)


FEATURE_MAPS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": identity,
    "elu_plus_one": elu_plus_one,
    "relu": relu,
    "taylor_exp": taylor_exp,
}

# Maps whose kernel ``phi(q) . phi(k)`` can be negative: a normalised linear attention must not use them.
SIGNED_FEATURE_MAPS = ("identity",)

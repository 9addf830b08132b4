"""The residual block around a sequence mixer: norm, mixer, activation / GLU, dropout, skip.

As in the S5 reference code's sequence layer: with ``prenorm``,
``y = x + Dropout(act(Mixer(Norm(x))))``; otherwise ``y = Norm(x + Dropout(act(Mixer(x))))``.
Dropout masks are shared over time (one mask per example and feature).

See docs/architecture.md#blocks-and-models.
"""

from collections.abc import Callable
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.arithmetic import dense_dot_general

ACTIVATIONS = ("gelu", "half_glu1", "half_glu2", "full_glu")
NORMS = ("layer", "batch")


def dense(features: int, axes: tuple[str, str], name: Optional[str] = None) -> nn.Dense:
    """A ``Dense`` whose kernel and bias carry logical axis names for sharding, in the product
    arithmetic in force (:mod:`jaxattn.nn.arithmetic`)."""
    dot_general = dense_dot_general()
    return nn.Dense(
        features,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
        name=name,
        **({} if dot_general is None else {"dot_general": dot_general}),
    )


def make_norm(kind: str, train: bool, name: str = "norm") -> nn.Module:
    """LayerNorm, or BatchNorm over batch and time (running averages at evaluation)."""
    scale = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
    bias = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",))
    if kind == "layer":
        return nn.LayerNorm(scale_init=scale, bias_init=bias, name=name)
    if kind == "batch":
        return nn.BatchNorm(
            use_running_average=not train, momentum=0.9, scale_init=scale, bias_init=bias, name=name
        )
    raise ValueError(f"norm={kind!r} is not one of {NORMS}")


class MixerBlock(nn.Module):
    """One residual block ``[B, L, H] -> [B, L, H]`` around ``mixer`` (with ``z = Mixer(Norm(x))``
    under ``prenorm``); ``init_carry`` / ``step`` decode ``x_t [B, H]`` through the mixer's own.

    Activations (``d = Dropout``, ``W1``, ``W2`` dense ``H -> H``):
      * ``gelu``: ``d(gelu(z))``
      * ``half_glu1``: ``g = d(gelu(z)); d(g * sigmoid(W2 g))``
      * ``half_glu2``: ``g = d(gelu(z)); d(z * sigmoid(W2 g))``
      * ``full_glu``: ``g = d(gelu(z)); d(W1 g * sigmoid(W2 g))``

    Example::

        block = MixerBlock(S5(state_size=16), activation="half_glu1")
        x = jnp.ones((2, 50, 32))                                   # [B, L, H]
        variables = block.init(jax.random.key(0), x)
        y = block.apply(variables, x)                               # [2, 50, 32]
        carry, y_0 = block.apply(variables, block.init_carry(2, 32), x[:, 0], method=block.step)
    """

    mixer: nn.Module
    norm: str = "layer"
    prenorm: bool = True
    activation: str = "half_glu1"
    dropout: float = 0.0

    @nn.compact
    def _residual(self, x: jax.Array, mix: Callable[[jax.Array], tuple[jax.Array, Any]], train: bool):
        """``x [..., H]`` -> (block output, whatever ``mix`` returned beside the mixer output)."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not one of {ACTIVATIONS}")
        features = x.shape[-1]
        # One dropout mask per example and feature, shared over time (axis 1 of [B, L, H]).
        broadcast = (1,) if x.ndim == 3 else ()
        drop = nn.Dropout(self.dropout, broadcast_dims=broadcast, deterministic=not train)
        norm = make_norm(self.norm, train)
        skip = x
        if self.prenorm:
            x = norm(x)
        z, extra = mix(x)
        g = drop(nn.gelu(z))
        if self.activation == "half_glu1":
            g = g * jax.nn.sigmoid(dense(features, ("embed", "mlp"), "gate")(g))
        elif self.activation == "half_glu2":
            g = z * jax.nn.sigmoid(dense(features, ("embed", "mlp"), "gate")(g))
        elif self.activation == "full_glu":
            g = dense(features, ("embed", "mlp"), "value")(g) * jax.nn.sigmoid(
                dense(features, ("embed", "mlp"), "gate")(g)
            )
        if self.activation != "gelu":
            g = drop(g)
        x = skip + g
        return (x if self.prenorm else norm(x)), extra

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        """``[B, L, H] -> [B, L, H]``."""
        return self._residual(x, lambda h: (self.mixer(h, segment_ids=segment_ids, train=train), None), train)[0]

    def init_carry(self, batch_size: int, features: Optional[int] = None):
        """The mixer's decoding state before the first token (the block itself keeps none: its norm,
        gates and dropout act per token). Needs no parameters, so an unbound block answers too."""
        return self.mixer.init_carry(batch_size, features)

    def step(self, carry, x_t: jax.Array):
        """One token ``x_t [B, H]`` through the block with the mixer's ``step``: ``(carry, y_t [B, H])``;
        from :meth:`init_carry`, equals :meth:`__call__` position by position (LayerNorm; BatchNorm
        in evaluation)."""

        def mix(h):
            new_carry, z = self.mixer.step(carry, h)
            return z, new_carry

        y_t, carry = self._residual(x_t, mix, train=False)
        return carry, y_t


def masked_mean(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Mean over the first ``lengths[b]`` steps: ``[B, L, H], [B] -> [B, H]``."""
    mask = (jnp.arange(x.shape[1])[None, :] < lengths[:, None]).astype(x.dtype)
    return jnp.einsum("blh,bl->bh", x, mask) / jnp.maximum(lengths, 1)[:, None].astype(x.dtype)


def last_step(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """``x[b, lengths[b] - 1]``: ``[B, L, H], [B] -> [B, H]``."""
    index = jnp.clip(lengths - 1, 0, x.shape[1] - 1)
    return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]


def every_step(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """No pooling, for per-position labels: ``[B, L, H] -> [B, L, H]``."""
    del lengths
    return x


POOLINGS: dict[str, Any] = {"mean": masked_mean, "last": last_step, "none": every_step}

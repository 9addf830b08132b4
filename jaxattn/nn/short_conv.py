"""The short convolution layer shared by the attention mixers (H3, Based, fla: "short conv").

See docs/ops.md#short-convolution-and-rotary-positions.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.ops import causal_conv1d


class ShortConvolution(nn.Module):
    """``silu(causal_conv1d(x, kernel))`` with a trained depthwise ``kernel [W, C]``.

    ``x [B, T, C]`` (the concatenated q, k, v projections) -> ``(y [B, T, C], history [B, W-1, C])``;
    ``history`` carries the last inputs between decoding steps. It gives a layer local order (which
    key precedes which value) that attention without positions lacks.
    """

    width: int

    @nn.compact
    def __call__(
        self, x: jax.Array, *, history: Optional[jax.Array] = None, segment_ids: Optional[jax.Array] = None
    ) -> tuple[jax.Array, jax.Array]:
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "heads")), (self.width, x.shape[-1])
        )
        y, history = causal_conv1d(x, kernel, history=history, segment_ids=segment_ids)
        return jax.nn.silu(y), history


def zero_conv_history(batch_size: int, width: int, channels: int) -> jax.Array:
    """The decoding carry of a :class:`ShortConvolution` before the first token: ``[B, W-1, C]``
    fp32 zeros (no rows for ``width = 0``, no convolution)."""
    return jnp.zeros((batch_size, max(width - 1, 0), channels), jnp.float32)

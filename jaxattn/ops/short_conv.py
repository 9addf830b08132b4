"""Short causal depthwise convolution over time, the local mixing linear-attention layers pair with
their global state (H3, Based, GLA in fla: "short conv").

``y_t = sum_{w=0}^{W-1} kernel[w] * x_{t-w}`` per channel, with inputs before the sequence taken
from ``history`` (zeros by default) and, with ``segment_ids``, no tap reaching into another segment.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_rank


def causal_conv1d(
    x: jax.Array, kernel: jax.Array, *, history: Optional[jax.Array] = None, segment_ids: Optional[jax.Array] = None
) -> tuple[jax.Array, jax.Array]:
    """``x [B, T, C]``, ``kernel [W, C]``, ``history [B, W-1, C]`` -> ``(y [B, T, C], new history)``.

    The new history holds the last ``W - 1`` inputs (for token-by-token decoding).
    """
    require_rank("causal_conv1d", "x", x, "B, T, C")
    require_rank("causal_conv1d", "kernel", kernel, "W, C")
    if kernel.shape[1] != x.shape[-1]:
        raise ValueError(f"causal_conv1d: need x [B, T, C] and kernel [W, C]; got {x.shape} and {kernel.shape}")
    width = kernel.shape[0]
    batch, length, channels = x.shape
    if history is None:
        history = jnp.zeros((batch, width - 1, channels), x.dtype)
    if history.shape != (batch, width - 1, channels):
        raise ValueError(f"causal_conv1d: history must be [B, W-1, C] = {(batch, width - 1, channels)}, got {history.shape}")
    if segment_ids is not None and segment_ids.shape != (batch, length):
        raise ValueError(f"causal_conv1d: `segment_ids` must be [B, T] = {(batch, length)}, got {segment_ids.shape}")
    padded = jnp.concatenate([history.astype(x.dtype), x], axis=1)
    if segment_ids is not None:
        # Taps from before the sequence belong to the first token's segment.
        segments = jnp.concatenate([jnp.broadcast_to(segment_ids[:, :1], (batch, width - 1)), segment_ids], axis=1)
    y = jnp.zeros_like(x)
    for w in range(width):
        tap = padded[:, width - 1 - w : width - 1 - w + length]
        if segment_ids is not None:
            same = segments[:, width - 1 - w : width - 1 - w + length] == segment_ids
            tap = tap * same[..., None].astype(x.dtype)
        y = y + kernel[w] * tap
    return y, padded[:, padded.shape[1] - (width - 1) :]

"""Short causal depthwise convolution over time, the local mixing linear-attention layers pair with
their global state (H3, Based, GLA in fla: "short conv").

``y_t = sum_{w=0}^{W-1} kernel[w] * x_{t-w}`` per channel, with inputs before the sequence taken
from ``history`` (zeros by default) and, with ``segment_ids``, no tap reaching into another segment
(taps from ``history`` belong to the first token's segment).

Implementations:
  * ``"reference"``: the dense ``[T, T + W - 1]`` banded matrix of the kernel, masked to the
    token's segment, times the history-padded sequence (quadratic in T: the test oracle).
  * ``"xla"``: one shifted multiply-add per tap (``W`` passes over the sequence).

See docs/ops.md#short-convolution-and-rotary-positions.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_floating, require_nonempty, require_rank, require_segment_ids
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.segments import same_segment

_HIGHEST = jax.lax.Precision.HIGHEST


def _reference(padded, kernel, segments, segment_ids):
    """``padded [B, W-1+T, C]``; ``segments`` ``[B, W-1+T]`` ids of the padded tokens or None."""
    width, length = kernel.shape[0], padded.shape[1] - kernel.shape[0] + 1
    lag = jnp.arange(length)[:, None] + width - 1 - jnp.arange(padded.shape[1])[None, :]  # [T, W-1+T]: t - s
    band = jnp.where(((lag >= 0) & (lag < width))[..., None], kernel[jnp.clip(lag, 0, width - 1)], 0.0)
    band = jnp.broadcast_to(band, (padded.shape[0], *band.shape))  # [B, T, W-1+T, C]
    if segments is not None:
        band = band * same_segment(segment_ids, segments)[..., None].astype(band.dtype)
    return jnp.einsum("btsc,bsc->btc", band, padded, precision=_HIGHEST)


def _xla(padded, kernel, segments, segment_ids):
    width, length = kernel.shape[0], padded.shape[1] - kernel.shape[0] + 1
    y = jnp.zeros((padded.shape[0], length, padded.shape[2]), padded.dtype)
    for w in range(width):
        tap = padded[:, width - 1 - w : width - 1 - w + length]
        if segments is not None:  # lag w's diagonal of same_segment(segment_ids, segments), no [T, T] mask
            same = segments[:, width - 1 - w : width - 1 - w + length] == segment_ids
            tap = tap * same[..., None].astype(padded.dtype)
        y = y + kernel[w] * tap
    return y


_IMPLEMENTATIONS = {"reference": _reference, "xla": _xla}


def causal_conv1d(
    x: jax.Array, kernel: jax.Array, *, history: Optional[jax.Array] = None, segment_ids: Optional[jax.Array] = None,
    impl: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """``y_t = sum_w kernel[w] x_{t-w}`` per channel; returns ``(y, new history)``.

    Args:
      x: ``[B, T, C]``.
      kernel: ``[W, C]``, ``W >= 1`` taps (``kernel[0]`` weighs the token itself).
      history: ``[B, W-1, C]``, the inputs before the sequence (zeros when None).
      segment_ids: ``[B, T]`` ints: no tap reaches into another segment.
      impl: ``"reference"``, ``"xla"`` or ``"auto"`` (xla).

    Returns:
      ``(y [B, T, C]`` in the promoted dtype of ``x`` and ``kernel``, ``history [B, W-1, C])``, the last ``W - 1`` inputs (for
      token-by-token decoding).

    Example::

        x, kernel = jnp.ones((2, 16, 8)), jnp.ones((4, 8)) / 4  # [B, T, C], [W, C]
        y, history = causal_conv1d(x, kernel)  # a moving average over 4 tokens
    """
    name = "causal_conv1d"
    require_rank(name, "x", x, "B, T, C")
    require_rank(name, "kernel", kernel, "W, C")
    require_floating(name, "x", x)
    require_nonempty(name, "x", x.shape[1])
    if kernel.shape[1] != x.shape[-1] or kernel.shape[0] < 1:
        raise ValueError(f"{name}: `kernel` must be [W, C] with W >= 1 and C = {x.shape[-1]} (x [B, T, C] = "
                         f"{x.shape}), got {kernel.shape}")
    width = kernel.shape[0]
    batch, length, channels = x.shape
    if history is None:
        history = jnp.zeros((batch, width - 1, channels), x.dtype)
    if history.shape != (batch, width - 1, channels):
        raise ValueError(f"{name}: `history` must be [B, W-1, C] = {(batch, width - 1, channels)}, got {history.shape}")
    require_segment_ids(name, segment_ids, (batch, length))
    convolve = resolve_impl(name, impl, _IMPLEMENTATIONS)
    padded = jnp.concatenate([history.astype(x.dtype), x], axis=1)
    segments = None
    if segment_ids is not None:
        segments = jnp.concatenate([jnp.broadcast_to(segment_ids[:, :1], (batch, width - 1)), segment_ids], axis=1)
    return convolve(padded, kernel, segments, segment_ids), padded[:, padded.shape[1] - (width - 1) :]

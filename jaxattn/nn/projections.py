"""The input and output projections that the attention-like mixers share.

Called from inside a mixer's ``@nn.compact`` method, so the dense layers and the short convolution
are that mixer's children (``query``, ``key``, ``value``, ``short_conv``, ``out``): one
implementation, and the parameter paths of every mixer stay what checkpoints hold.

* :func:`qkv_projections`: ``x [B, L, d_model]`` -> ``q, k, v [B, L, width_i]`` through dense
  ``query`` / ``key`` / ``value``, then (``short_conv = W > 0``) one causal depthwise convolution
  and SiLU over their concatenation ``[B, L, sum width_i]``, carrying its last ``W - 1`` inputs.
* :func:`multi_head_qkv`: the same for ``H`` heads of size ``D``, as ``[B, L, H, D]``, with rotary
  positions on ``q`` and ``k`` when asked (softmax and linear attention).
* :func:`output_projection`: heads ``[B, L, H, D]`` (or ``[B, L, H D]``) -> ``[B, L, d_model]``,
  with an optional output gate ``silu(x W)`` (GLA, RetNet, Gated DeltaNet).

The layers they serve: docs/softmax_attention.md#the-layer and docs/linear_attention.md#feature-maps.
"""

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.nn.blocks import dense
from jaxattn.nn.short_conv import ShortConvolution
from jaxattn.ops import apply_rotary

QKV_NAMES = ("query", "key", "value")


def qkv_projections(
    x: jax.Array, widths: Sequence[int], *, short_conv: int = 0, conv_history: Optional[jax.Array] = None,
    segment_ids: Optional[jax.Array] = None,
) -> tuple[list[jax.Array], jax.Array]:
    """Dense ``query``, ``key``, ``value`` of ``widths`` and the optional short convolution.

    Args:
      x: ``[B, L, d_model]``.
      widths: the output widths of the three projections.
      short_conv: width W of the convolution (0: none, and the projections are returned as they are).
      conv_history: ``[B, W-1, sum(widths)]``, the inputs before ``x`` (decoding); None: zeros.
      segment_ids: ``[B, L]``; the convolution does not reach across a segment start.

    Returns:
      ``([q, k, v] each [B, L, width_i], history [B, W-1, sum(widths)])`` (``history`` has no
      rows without a convolution).
    """
    qkv = jnp.concatenate([dense(width, ("embed", "heads"), name)(x) for width, name in zip(widths, QKV_NAMES)], -1)
    history = jnp.zeros((x.shape[0], 0, qkv.shape[-1]), qkv.dtype)
    if short_conv:
        qkv, history = ShortConvolution(short_conv, name="short_conv")(qkv, history=conv_history,
                                                                        segment_ids=segment_ids)
    return jnp.split(qkv, np.cumsum(widths)[:-1].tolist(), axis=-1), history


def multi_head_qkv(
    x: jax.Array, num_heads: int, head_dim: int, *, short_conv: int = 0, rotary_positions: Optional[jax.Array] = None,
    conv_history: Optional[jax.Array] = None, segment_ids: Optional[jax.Array] = None,
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], jax.Array]:
    """:func:`qkv_projections` of width ``H D`` each, split into heads: ``(q, k, v [B, L, H, D], history)``.

    ``rotary_positions [B, L]``: rotate ``q`` and ``k`` by these positions
    (:func:`jaxattn.ops.apply_rotary`); None: no rotary embedding.
    """
    batch, length = x.shape[:2]
    width = num_heads * head_dim
    (q, k, v), history = qkv_projections(x, (width,) * 3, short_conv=short_conv, conv_history=conv_history,
                                         segment_ids=segment_ids)
    q, k, v = (a.reshape(batch, length, num_heads, head_dim) for a in (q, k, v))
    if rotary_positions is not None:
        q, k = apply_rotary(q, rotary_positions), apply_rotary(k, rotary_positions)
    return (q, k, v), history


def output_projection(o: jax.Array, features: int, *, gate_input: Optional[jax.Array] = None,
                      dtype: Optional[jnp.dtype] = None) -> jax.Array:
    """Dense ``out`` of the heads ``o [B, L, H, D]`` or ``[B, L, H D]``: ``[B, L, features]``.

    ``gate_input``: ``x [B, L, d_model]``; the heads are first multiplied by ``silu(x W)``, ``W`` the
    dense ``output_gate``. ``dtype``: the heads are cast to it (after the gate) before ``out``.
    """
    o = o.reshape(*o.shape[:2], -1)
    if gate_input is not None:
        o = o * jax.nn.silu(dense(o.shape[-1], ("embed", "heads"), "output_gate")(gate_input))
    if dtype is not None:
        o = o.astype(dtype)
    return dense(features, ("heads", "embed"), "out")(o)

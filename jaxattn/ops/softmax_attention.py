"""Softmax attention, the baseline every efficient mixer is compared with (docs/softmax_attention.md).

``o_i = sum_j softmax_j(scale q_i . k_j + mask) v_j`` on ``[B, T, H, D]``; causal masks ``j > i``;
``segment_ids`` mask pairs in different segments; ``kv_lengths`` mask keys past each row's length.

Implementations:
  * ``"reference"``: explicit scores, fp32, HIGHEST precision (the test oracle).
  * ``"xla"``: :func:`jax.nn.dot_product_attention` (XLA's fused attention where the backend has one).
  * ``"pallas"``: FlashAttention-2 kernels for GPU (Triton) and TPU (Mosaic) with a recomputing
    backward (:mod:`pallas_kernels.flash_attention`); no ``kv_lengths``.
"""

from collections.abc import Callable
from typing import Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import (
    require_floating, require_lengths, require_nonempty, require_rank, require_scale, require_segment_ids,
)
from jaxattn.ops.dispatch import is_custom_dot_general, resolve_impl
from jaxattn.ops.segments import same_segment
from pallas_kernels.flash_attention import flash_attention


def _combine(mask: Optional[jax.Array], other: jax.Array) -> jax.Array:
    return other if mask is None else mask & other


def _mask(length_q: int, length_k: int, causal: bool, segment_ids, kv_lengths) -> Optional[jax.Array]:
    """``[B or 1, 1, Tq, Tk]`` bool: True where a query may attend to a key."""
    mask = None
    if causal:
        mask = jnp.tril(jnp.ones((length_q, length_k), bool), k=length_k - length_q)[None, None]
    if segment_ids is not None:
        mask = _combine(mask, same_segment(segment_ids, segment_ids)[:, None])
    if kv_lengths is not None:
        mask = _combine(mask, (jnp.arange(length_k)[None, :] < kv_lengths[:, None])[:, None, None, :])
    return mask


def softmax_attention_weights(
    q: jax.Array, k: jax.Array, *, scale=None, causal: bool = True, segment_ids=None, kv_lengths=None,
    dot_general: Optional[Callable] = None,
) -> jax.Array:
    """Explicit attention weights ``softmax(scale q k^T + mask)`` ``[B, H, Tq, Tk]`` in fp32
    (``q k^T`` through ``dot_general`` when given, e.g. an L-Matmul)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    scores = scale * jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32),
                                precision=jax.lax.Precision.HIGHEST, _dot_general=dot_general or jax.lax.dot_general)
    mask = _mask(q.shape[1], k.shape[1], causal, segment_ids, kv_lengths)
    if mask is not None:
        scores = jnp.where(mask, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def _reference(q, k, v, scale, causal, segment_ids, kv_lengths, dot_general=None):
    weights = softmax_attention_weights(
        q, k, scale=scale, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths, dot_general=dot_general
    )
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST,
                      _dot_general=dot_general or jax.lax.dot_general)


def _xla(q, k, v, scale, causal, segment_ids, kv_lengths):
    # is_causal aligns queries with the first keys; a KV cache (Tq < Tk) needs an explicit mask.
    fused_causal = causal and q.shape[1] == k.shape[1]
    mask = _mask(q.shape[1], k.shape[1], causal and not fused_causal, segment_ids, None)
    return jax.nn.dot_product_attention(
        q, k, v, scale=scale, is_causal=fused_causal, mask=mask,
        key_value_seq_lengths=None if kv_lengths is None else kv_lengths.astype(jnp.int32),
    )


def _pallas(q, k, v, scale, causal, segment_ids, kv_lengths, block_sizes=None, interpret=None):
    del kv_lengths  # None: the dispatcher refuses kv_lengths for impl="pallas"
    return flash_attention(q, k, v, scale=scale, causal=causal, segment_ids=segment_ids, block_sizes=block_sizes,
                           interpret=interpret)


_IMPLEMENTATIONS = {"reference": _reference, "xla": _xla, "pallas": _pallas}


def softmax_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: Optional[float] = None,
    causal: bool = True,
    segment_ids: Optional[jax.Array] = None,
    kv_lengths: Optional[jax.Array] = None,
    dot_general: Optional[Callable] = None,
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
) -> jax.Array:
    """Softmax attention ``[B, Tq, H, D] x [B, Tk, H, D] x [B, Tk, H, Dv] -> [B, Tq, H, Dv]``.

    Args:
      q: queries ``[B, Tq, H, D]``; k: keys ``[B, Tk, H, D]``; v: values ``[B, Tk, H, Dv]``.
      scale: default ``D ** -0.5``.
      causal: queries are aligned with the last ``Tq`` keys (a KV cache): query ``i`` sees keys
        ``j <= i + Tk - Tq``.
      segment_ids: ``[B, T]`` ints (packed sequences, ``Tq == Tk``): pairs of one segment only.
      kv_lengths: ``[B]`` ints in ``[0, Tk]``: only the first ``kv_lengths[b]`` keys are valid (a
        partly filled cache, or right padding).
      dot_general: replaces the products ``q k^T`` and ``P v`` (e.g. an L-Matmul); the softmax stays
        fp32. It runs on the explicit (reference) path whatever ``impl`` (:mod:`jaxattn.ops.dispatch`).
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``FlashBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).
      impl: ``"reference"``, ``"xla"`` (:func:`jax.nn.dot_product_attention`), ``"pallas"`` or
        ``"auto"`` (pallas on GPU and TPU without ``kv_lengths``, else xla).

    Returns:
      ``o [B, Tq, H, Dv]`` in ``v``'s dtype.

    Example::

        q = k = v = jnp.ones((2, 16, 4, 32))  # [B, T, H, D]
        o = softmax_attention(q, k, v, causal=True)  # [2, 16, 4, 32]
    """
    name = "softmax_attention"
    for arg, a in (("q", q), ("k", k), ("v", v)):
        require_rank(name, arg, a, "B, T, H, D")
        require_floating(name, arg, a)
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"{name}: incompatible shapes: need q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv]; "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    require_nonempty(name, "q", q.shape[1], axis="Tq")
    require_nonempty(name, "k", k.shape[1], axis="Tk")
    if segment_ids is not None and q.shape[1] != k.shape[1]:
        raise ValueError(f"{name}: `segment_ids` need Tq == Tk, got Tq = {q.shape[1]} and Tk = {k.shape[1]}")
    require_segment_ids(name, segment_ids, q.shape[:2])
    if kv_lengths is not None:
        require_lengths(name, "kv_lengths", kv_lengths, k.shape[0], k.shape[1])
    require_scale(name, scale)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    unsupported = "kv_lengths" if kv_lengths is not None else None
    attend = resolve_impl(name, impl, _IMPLEMENTATIONS, pallas_unsupported=unsupported,
                          dot_general=dot_general, takes_dot_general=("reference",),
                          pallas_options=dict(block_sizes=block_sizes, interpret=interpret))
    products = {"dot_general": dot_general} if is_custom_dot_general(dot_general) else {}
    return attend(q, k, v, scale, causal, segment_ids, kv_lengths, **products).astype(v.dtype)

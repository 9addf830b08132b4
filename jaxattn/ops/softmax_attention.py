"""Softmax attention, the baseline every efficient mixer is compared with (PAPERS.md section 5).

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

from jaxattn.ops.checks import require_rank
from jaxattn.ops.dispatch import resolve_impl
from pallas_kernels.flash_attention import flash_attention


def _combine(mask: Optional[jax.Array], other: jax.Array) -> jax.Array:
    return other if mask is None else mask & other


def _mask(length_q: int, length_k: int, causal: bool, segment_ids, kv_lengths) -> Optional[jax.Array]:
    """``[B or 1, 1, Tq, Tk]`` bool: True where a query may attend to a key."""
    mask = None
    if causal:
        mask = jnp.tril(jnp.ones((length_q, length_k), bool), k=length_k - length_q)[None, None]
    if segment_ids is not None:
        mask = _combine(mask, (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None])
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


def _pallas(q, k, v, scale, causal, segment_ids, kv_lengths):
    if kv_lengths is not None:
        raise ValueError("softmax_attention: impl='pallas' does not support kv_lengths; use impl='xla'")
    return flash_attention(q, k, v, scale=scale, causal=causal, segment_ids=segment_ids)


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
    impl: str = "auto",
) -> jax.Array:
    """Softmax attention ``[B, Tq, H, D] x [B, Tk, H, D] x [B, Tk, H, Dv] -> [B, Tq, H, Dv]``.

    Queries are aligned with the last ``Tq`` keys (a KV cache): with ``causal``, query ``i`` sees
    keys ``j <= i + Tk - Tq``. ``segment_ids [B, T]`` needs ``Tq == Tk``. ``kv_lengths [B]``: only
    the first ``kv_lengths[b]`` keys are valid (a partly filled cache, or right padding).
    ``dot_general`` (e.g. an L-Matmul) replaces the products ``q k^T`` and ``P v``; the softmax stays
    fp32; it runs the explicit (reference) path.
    """
    for name, a in (("q", q), ("k", k), ("v", v)):
        require_rank("softmax_attention", name, a, "B, T, H, D")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"softmax_attention: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
    if segment_ids is not None and (q.shape[1] != k.shape[1] or segment_ids.shape != q.shape[:2]):
        raise ValueError(f"softmax_attention: `segment_ids` must be [B, T] = {q.shape[:2]} with Tq == Tk")
    if kv_lengths is not None and kv_lengths.shape != (k.shape[0],):
        raise ValueError(f"softmax_attention: `kv_lengths` must be [B] = {(k.shape[0],)}, got {kv_lengths.shape}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if dot_general is not None:
        if impl not in ("auto", "reference"):
            raise ValueError(f"softmax_attention: a dot_general runs the explicit path; impl={impl!r} cannot take it")
        return _reference(q, k, v, scale, causal, segment_ids, kv_lengths, dot_general).astype(v.dtype)
    unsupported = "kv_lengths" if kv_lengths is not None else None
    attend = resolve_impl("softmax_attention", impl, _IMPLEMENTATIONS, pallas_unsupported=unsupported)
    return attend(q, k, v, scale, causal, segment_ids, kv_lengths).astype(v.dtype)

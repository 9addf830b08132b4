"""Softmax attention, the baseline every efficient mixer is compared with (docs/softmax_attention.md).

``o_i = sum_j softmax_j(scale q_i . k_j + mask) v_j`` on ``[B, T, H, D]``; causal masks keys after the
query's position (query ``i`` sits at key position ``query_offset + i``, by default ``Tk - Tq``);
``segment_ids`` (and ``kv_segment_ids`` for keys of another length) mask pairs in different segments;
``kv_lengths`` mask keys past each row's length.

Implementations:
  * ``"reference"``: explicit scores, fp32, HIGHEST precision (the test oracle).
  * ``"xla"``: :func:`jax.nn.dot_product_attention` (XLA's fused attention where the backend has one).
  * ``"pallas"``: FlashAttention-2 kernels for GPU (Triton) and TPU (Mosaic) with a recomputing
    backward (:mod:`pallas_kernels.flash_attention`); no ``kv_lengths``, ``query_offset`` or
    ``kv_segment_ids``.
"""

from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import (
    concrete_or_none, require_floating, require_lengths, require_nonempty, require_rank, require_scale,
    require_segment_ids,
)
from jaxattn.ops.dispatch import is_custom_dot_general, resolve_impl
from jaxattn.ops.segments import same_segment
from pallas_kernels.flash_attention import flash_attention


class _Masking(NamedTuple):
    """What decides which keys a query may see (docs/softmax_attention.md#masks-and-segments).

    ``query_offset``: None (queries aligned with the last keys, ``Tk - Tq``), an int or a traced int32
    scalar; ``kv_segment_ids``: the keys' ids ``[B, Tk]`` (None: ``segment_ids``, then ``Tq == Tk``).
    """

    causal: bool = True
    segment_ids: Optional[jax.Array] = None
    kv_segment_ids: Optional[jax.Array] = None
    query_offset: Union[None, int, jax.Array] = None
    kv_lengths: Optional[jax.Array] = None


def _combine(mask: Optional[jax.Array], other: jax.Array) -> jax.Array:
    return other if mask is None else mask & other


def _mask(length_q: int, length_k: int, masking: _Masking) -> Optional[jax.Array]:
    """``[B or 1, 1, Tq, Tk]`` bool: True where query ``i`` may attend to key ``j``:
    ``j <= query_offset + i`` (causal), ``segment_ids[i] == kv_segment_ids[j]``, ``j < kv_lengths``."""
    mask = None
    if masking.causal and masking.query_offset is None:
        mask = jnp.tril(jnp.ones((length_q, length_k), bool), k=length_k - length_q)[None, None]
    elif masking.causal:  # the offset may be traced (a shard's place in the sequence): compare positions
        positions = masking.query_offset + jnp.arange(length_q)
        mask = (jnp.arange(length_k)[None, :] <= positions[:, None])[None, None]
    if masking.segment_ids is not None:
        keys = masking.segment_ids if masking.kv_segment_ids is None else masking.kv_segment_ids
        mask = _combine(mask, same_segment(masking.segment_ids, keys)[:, None])
    if masking.kv_lengths is not None:
        mask = _combine(mask, (jnp.arange(length_k)[None, :] < masking.kv_lengths[:, None])[:, None, None, :])
    return mask


def softmax_attention_weights(
    q: jax.Array, k: jax.Array, *, scale=None, causal: bool = True, segment_ids=None, kv_lengths=None,
    query_offset=None, kv_segment_ids=None, dot_general: Optional[Callable] = None,
) -> jax.Array:
    """Explicit attention weights ``softmax(scale q k^T + mask)`` ``[B, H, Tq, Tk]`` in fp32
    (``q k^T`` through ``dot_general`` when given, e.g. an L-Matmul); the mask arguments are
    :func:`softmax_attention`'s."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    scores = scale * jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32),
                                precision=jax.lax.Precision.HIGHEST, _dot_general=dot_general or jax.lax.dot_general)
    masking = _Masking(causal, segment_ids, kv_segment_ids, query_offset, kv_lengths)
    mask = _mask(q.shape[1], k.shape[1], masking)
    if mask is not None:
        scores = jnp.where(mask, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def _reference(q, k, v, scale, masking: _Masking, dot_general=None):
    weights = softmax_attention_weights(
        q, k, scale=scale, causal=masking.causal, segment_ids=masking.segment_ids, kv_lengths=masking.kv_lengths,
        query_offset=masking.query_offset, kv_segment_ids=masking.kv_segment_ids, dot_general=dot_general,
    )
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST,
                      _dot_general=dot_general or jax.lax.dot_general)


def _xla(q, k, v, scale, masking: _Masking):
    # is_causal aligns queries with the first keys; a KV cache (Tq < Tk) or a query offset needs an
    # explicit mask.
    fused_causal = masking.causal and masking.query_offset is None and q.shape[1] == k.shape[1]
    mask = _mask(q.shape[1], k.shape[1], masking._replace(causal=masking.causal and not fused_causal, kv_lengths=None))
    kv_lengths = masking.kv_lengths
    # dot_product_attention needs Dv == D. Zero columns change neither the scores (the scale is
    # explicit) nor the kept output columns, so the narrower side is padded and the output sliced.
    width, dv = max(q.shape[-1], v.shape[-1]), v.shape[-1]
    q, k, v = (jnp.pad(a, ((0, 0),) * 3 + ((0, width - a.shape[-1]),)) for a in (q, k, v))
    o = jax.nn.dot_product_attention(
        q, k, v, scale=scale, is_causal=fused_causal, mask=mask,
        key_value_seq_lengths=None if kv_lengths is None else kv_lengths.astype(jnp.int32),
    )
    return o[..., :dv]


def _pallas(q, k, v, scale, masking: _Masking, block_sizes=None, interpret=None):
    # kv_lengths, query_offset, kv_segment_ids are None: the dispatcher refuses them for impl="pallas"
    return flash_attention(q, k, v, scale=scale, causal=masking.causal, segment_ids=masking.segment_ids,
                           block_sizes=block_sizes, interpret=interpret)


def _require_query_offset(name: str, query_offset, length_q: int, length_k: int) -> None:
    """An int or int32 scalar; when its value is known, queries must sit among the keys:
    ``0 <= query_offset <= Tk - Tq``."""
    if isinstance(query_offset, bool) or not jnp.issubdtype(jnp.result_type(query_offset), jnp.integer):
        raise TypeError(f"{name}: `query_offset` must be an int or an integer scalar, got {query_offset!r}")
    if jnp.ndim(query_offset) != 0:
        raise ValueError(f"{name}: `query_offset` must be a scalar, got shape {jnp.shape(query_offset)}")
    value = concrete_or_none(query_offset)
    if value is not None and not 0 <= int(value) <= length_k - length_q:
        raise ValueError(f"{name}: `query_offset` must lie in [0, Tk - Tq] = [0, {length_k - length_q}] (the "
                         f"queries' key positions), got {int(value)}")


def _check_segments(name: str, segment_ids, kv_segment_ids, q_shape: tuple, k_shape: tuple) -> None:
    if kv_segment_ids is not None:
        if segment_ids is None:
            raise ValueError(f"{name}: `kv_segment_ids` need the queries' `segment_ids` [B, Tq]")
        require_segment_ids(name, segment_ids, q_shape[:2], layout="B, Tq")
        require_segment_ids(name, kv_segment_ids, k_shape[:2], layout="B, Tk", name="kv_segment_ids")
        return
    if segment_ids is not None and q_shape[1] != k_shape[1]:
        raise ValueError(f"{name}: `segment_ids` alone need Tq == Tk (pass the keys' `kv_segment_ids` [B, Tk]), "
                         f"got Tq = {q_shape[1]} and Tk = {k_shape[1]}")
    require_segment_ids(name, segment_ids, q_shape[:2])


def _pallas_unsupported(kv_lengths, query_offset, kv_segment_ids) -> Optional[str]:
    given = [name for name, value in (("kv_lengths", kv_lengths), ("query_offset", query_offset),
                                      ("kv_segment_ids", kv_segment_ids)) if value is not None]
    return " and ".join(given) or None


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
    query_offset: Union[None, int, jax.Array] = None,
    kv_segment_ids: Optional[jax.Array] = None,
    dot_general: Optional[Callable] = None,
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
) -> jax.Array:
    """Softmax attention ``[B, Tq, H, D] x [B, Tk, H, D] x [B, Tk, H, Dv] -> [B, Tq, H, Dv]``.

    Args:
      q: queries ``[B, Tq, H, D]``; k: keys ``[B, Tk, H, D]``; v: values ``[B, Tk, H, Dv]``.
      scale: default ``D ** -0.5``.
      causal: query ``i`` sees keys ``j <= query_offset + i``; by default the queries are aligned
        with the last ``Tq`` keys (a KV cache): ``j <= i + Tk - Tq``.
      segment_ids: ``[B, T]`` ints (packed sequences, ``Tq == Tk``): pairs of one segment only; with
        ``kv_segment_ids``, the queries' ids ``[B, Tq]``.
      kv_lengths: ``[B]`` ints in ``[0, Tk]``: only the first ``kv_lengths[b]`` keys are valid (a
        partly filled cache, or right padding).
      query_offset: the key position of query 0, an int or a traced int32 scalar in ``[0, Tk - Tq]``
        (a query shard against all the keys: the shard's start); None: ``Tk - Tq``. Only the causal
        mask uses it.
      kv_segment_ids: ``[B, Tk]`` ints, the keys' segment ids when they are not the queries'
        (``Tq != Tk``); needs ``segment_ids``.
      dot_general: replaces the products ``q k^T`` and ``P v`` (e.g. an L-Matmul); the softmax stays
        fp32. It runs on the explicit (reference) path whatever ``impl`` (:mod:`jaxattn.ops.dispatch`).
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``FlashBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).
      impl: ``"reference"``, ``"xla"`` (:func:`jax.nn.dot_product_attention`), ``"pallas"`` or
        ``"auto"`` (pallas on GPU and TPU without ``kv_lengths``, ``query_offset`` and
        ``kv_segment_ids``, else xla).

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
    _check_segments(name, segment_ids, kv_segment_ids, q.shape, k.shape)
    if query_offset is not None:
        _require_query_offset(name, query_offset, q.shape[1], k.shape[1])
    if kv_lengths is not None:
        require_lengths(name, "kv_lengths", kv_lengths, k.shape[0], k.shape[1])
    require_scale(name, scale)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    unsupported = _pallas_unsupported(kv_lengths, query_offset, kv_segment_ids)
    attend = resolve_impl(name, impl, _IMPLEMENTATIONS, pallas_unsupported=unsupported,
                          dot_general=dot_general, takes_dot_general=("reference",),
                          pallas_options=dict(block_sizes=block_sizes, interpret=interpret))
    products = {"dot_general": dot_general} if is_custom_dot_general(dot_general) else {}
    masking = _Masking(causal, segment_ids, kv_segment_ids, query_offset, kv_lengths)
    return attend(q, k, v, scale, masking, **products).astype(v.dtype)

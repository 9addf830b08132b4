"""Kronecker (tensor) attention: attention over pairs of keys (Alman & Song; 2-simplicial attention).

docs/tensor_attention.md. On ``[B, T, H, D]`` inputs q, k1, k2 and ``[B, T, H, Dv]`` v1, v2, per head:

    ``s[i, j, k] = scale sum_l q[i, l] k1[j, l] k2[k, l]``,
    ``out[i] = sum_{j, k} softmax_{(j, k)}(s[i])[j, k] (v1[j] .* v2[k])``,

i.e. ``D^-1 exp(scale Q (K1 ⊘ K2)^T) (V1 ⊘ V2)`` with ``⊘`` the row-wise Khatri-Rao product.
``scale`` defaults to ``D ** -0.5``. Masks: ``causal`` (``j, k <= i``) and ``window=(w1, w2)``, the
causal 2-D sliding window ``i - w1 < j <= i``, ``i - w2 < k <= i``; with ``segment_ids`` (packed
sequences) only pairs of the query's own segment.

Implementations:
  * ``"reference"``: the explicit ``[B, H, T, T, T]`` trilinear logits, fp32, HIGHEST precision.
  * ``"xla"``: exact and memory-efficient: for each block of queries, a scan over blocks of k1
    tokens with an online softmax over the pairs, one ``[bi, bj, T]`` score tile at a time (never
    ``T^2`` or ``T^3``); a ``custom_vjp`` whose backward recomputes the tiles from the saved row
    log-sum-exp (``dS = P .* (dP - rowsum(dO .* O))``).
  * ``"pallas"``: the same algorithm as GPU (Triton) and TPU (Mosaic) kernels
    (:mod:`pallas_kernels.tensor_attention`): tiles of ``bi * bj`` pair products times a k2 tile
    (one matrix product), fully masked tiles skipped, a three-pass recomputing backward.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_floating, require_nonempty, require_rank, require_scale, require_segment_ids
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.segments import same_segment
from pallas_kernels.tensor_attention import tensor_attention as pallas_tensor_attention

_HIGHEST = jax.lax.Precision.HIGHEST
_F32 = jnp.float32
QUERY_BLOCK = 64
KEY_BLOCK = 16


def pair_mask(length_q: int, length_k: int, causal: bool, window, q_start=0, j_start=0, j_size=None, segments=None):
    """``[Tq, Tj, Tk]`` bool: may query i attend to the pair (j, k)? Positions start at the offsets.

    ``segments``: ``(of the queries [G, Tq], of the j tokens [G, Tj], of the k tokens [G, Tk])``
    int ids; then ``[G, Tq, Tj, Tk]``, pairs of the query's own segment only.
    """
    j_size = length_k if j_size is None else j_size
    i = q_start + jnp.arange(length_q)[:, None, None]
    j = j_start + jnp.arange(j_size)[None, :, None]
    k = jnp.arange(length_k)[None, None, :]
    keep = (j < length_k) & (k < length_k)  # padded k1 tokens
    if causal or window is not None:
        keep = keep & (j <= i) & (k <= i)
    if window is not None:
        keep = keep & (j > i - window[0]) & (k > i - window[1])
    if segments is not None:
        of_q, of_j, of_k = segments
        keep = keep[None] & same_segment(of_q, of_j)[..., None] & same_segment(of_q, of_k)[:, :, None, :]
    return keep


def attend_pairs(q, k1, k2, v1, v2, keep, scale):
    """The explicit contraction: ``[B, Tq, H, D]`` queries against ``[B, Tj, H, D]`` k1 /
    ``[B, Tj, H, Dv]`` v1 and ``[B, Tk, H, D]`` k2 / ``[B, Tk, H, Dv]`` v2, with ``keep`` broadcastable
    to ``[B, H, Tq, Tj, Tk]``; fp32 ``[B, Tq, H, Dv]`` (0 for a query that may attend to no pair)."""
    f32 = lambda a: a.astype(_F32)  # noqa: E731
    s = scale * jnp.einsum("bihl,bjhl,bkhl->bhijk", f32(q), f32(k1), f32(k2), precision=_HIGHEST)
    keep = jnp.broadcast_to(keep, s.shape)
    flat = lambda a: a.reshape(*s.shape[:3], -1)  # noqa: E731  a softmax over the pairs
    p = jax.nn.softmax(flat(s), axis=-1, where=flat(keep)).reshape(s.shape)
    return jnp.einsum("bhijk,bjhd,bkhd->bihd", p, f32(v1), f32(v2), precision=_HIGHEST)


def _reference(q, k1, k2, v1, v2, segment_ids, scale, causal, window):
    length = q.shape[1]
    segments = None if segment_ids is None else (segment_ids,) * 3
    keep = pair_mask(length, length, causal, window, segments=segments)
    return attend_pairs(q, k1, k2, v1, v2, keep[:, None] if segments else keep, scale)


# ----------------------------------------------------------------------------- streaming exact path


class _Layout:
    """Block sizes and padded lengths of the streaming path for one call."""

    def __init__(self, length: int):
        self.length = length
        self.block_q = min(QUERY_BLOCK, length)
        self.block_j = min(KEY_BLOCK, length)
        self.padded_q = -(-length // self.block_q) * self.block_q
        self.padded_j = -(-length // self.block_j) * self.block_j


def _tile(q_blk, k1_blk, k2, scale, layout, q_start, j_index, causal, window, segments):
    """One tile of a query block against a k1 block and every k2: ``(pairs, keep, s)`` with the
    products ``q_i .* k1_j`` ``[G, bi, bj, D]``, the mask ``[1 or G, bi, bj, T]`` and the scores
    ``[G, bi, bj, T]`` (masked with -inf). ``segments``: None, or the ids of the block's queries
    ``[G, bi]``, its k1 tokens ``[G, bj]`` and every k2 token ``[G, T]``."""
    keep = pair_mask(layout.block_q, k2.shape[1], causal, window, q_start, j_index * layout.block_j, layout.block_j,
                     segments)
    keep = keep if segments is not None else keep[None]
    pairs = q_blk[:, :, None, :] * k1_blk[:, None, :, :]
    s = scale * jnp.einsum("gijd,gkd->gijk", pairs, k2, precision=_HIGHEST)
    return pairs, keep, jnp.where(keep, s, -jnp.inf)


def _blocks(x, size):
    """``[G, T, ...] -> [T / size, G, size, ...]`` (None stays None)."""
    if x is None:
        return None
    g, t = x.shape[:2]
    return jnp.moveaxis(x.reshape(g, t // size, size, *x.shape[2:]), 1, 0)


def _segment_blocks(segments, layout):
    """``(of q [G, Tq], of k1 [G, Tj], of k2 [G, T])`` or None -> blocks of the q and k1 ids and the k2 ids."""
    if segments is None:
        return None, None, None
    of_q, of_j, of_k = segments
    return _blocks(of_q, layout.block_q), _blocks(of_j, layout.block_j), of_k


class _KeySweep:
    """What the forward and the backward pass share: the layout, the k1 and v1 blocks cut once, the
    segment-id blocks, and a scan of one query block across the k1 blocks, one :func:`_tile` each."""

    def __init__(self, k1, k2, v1, segments, scale, causal, window):
        self.layout = _Layout(k2.shape[1])  # k2 is not padded: the true length
        self.k2, self.scale, self.causal, self.window = k2, scale, causal, window
        self.has_segments = segments is not None
        self.q_segments, j_segments, self.k_segments = _segment_blocks(segments, self.layout)
        block_j = self.layout.block_j
        self.key_blocks = (jnp.arange(self.layout.padded_j // block_j), _blocks(k1, block_j), _blocks(v1, block_j),
                           j_segments)
        self.query_indices = jnp.arange(self.layout.padded_q // self.layout.block_q)

    def scan(self, step, init, q_index, q_blk, q_seg):
        """``lax.scan`` of ``step(carry, (pairs, keep, s), k1_blk, v1_blk) -> (carry, y)`` over the k1
        blocks, the tile that of query block ``q_index`` (queries ``q_blk``, their ids ``q_seg``)."""
        q_start = q_index * self.layout.block_q

        def key_block(carry, xs):
            j_index, k1_blk, v1_blk, j_seg = xs
            tile_segments = (q_seg, j_seg, self.k_segments) if self.has_segments else None
            tile = _tile(q_blk, k1_blk, self.k2, self.scale, self.layout, q_start, j_index, self.causal, self.window,
                         tile_segments)
            return step(carry, tile, k1_blk, v1_blk)

        return jax.lax.scan(key_block, init, self.key_blocks)


def _forward(q, k1, k2, v1, v2, segments, scale, causal, window):
    """Head-major ``[G, T, D]`` (T padded) -> ``(out [G, T, Dv], lse [G, T])``."""
    sweep = _KeySweep(k1, k2, v1, segments, scale, causal, window)
    layout = sweep.layout

    def query_block(args):
        index, q_blk, q_seg = args

        def key_block(carry, tile, k1_blk, v1_blk):
            del k1_blk
            m, l, acc = carry
            _, _, s = tile
            m_new = jnp.maximum(m, jnp.max(s, axis=(2, 3)))
            m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p = jnp.exp(s - m_safe[..., None, None])
            correction = jnp.exp(jnp.where(jnp.isfinite(m), m - m_safe, -jnp.inf))
            pv2 = jnp.einsum("gijk,gkd->gijd", p, v2, precision=_HIGHEST)
            acc = correction[..., None] * acc + jnp.einsum("gijd,gjd->gid", pv2, v1_blk, precision=_HIGHEST)
            return (m_new, correction * l + jnp.sum(p, axis=(2, 3)), acc), None

        g = q.shape[0]
        init = (jnp.full((g, layout.block_q), -jnp.inf), jnp.zeros((g, layout.block_q)),
                jnp.zeros((g, layout.block_q, v1.shape[-1])))
        (m, l, acc), _ = sweep.scan(key_block, init, index, q_blk, q_seg)
        # Padded query rows may see no pair at all (windowed): output 0 there, not NaN.
        seen = l > 0
        return acc / jnp.where(seen, l, 1.0)[..., None], jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)

    out, lse = jax.lax.map(query_block, (sweep.query_indices, _blocks(q, layout.block_q), sweep.q_segments))
    g = q.shape[0]
    return jnp.moveaxis(out, 0, 1).reshape(g, -1, v1.shape[-1]), jnp.moveaxis(lse, 0, 1).reshape(g, -1)


def _contract_pairs(tile, pair_values):
    """``sum_{i, j} tile[g, i, j, k] pair_values[g, i, j, d]`` -> ``[G, T, D]``, computed as
    ``(pair_values^T tile)^T`` with the wide ``[bi bj, T]`` tile as the right operand: XLA's CPU dot
    runs that form several times faster than the same contraction written the other way round."""
    flat = lambda a: a.reshape(a.shape[0], -1, a.shape[-1])  # noqa: E731
    return jnp.swapaxes(jnp.einsum("gpd,gpk->gdk", flat(pair_values), flat(tile), precision=_HIGHEST), 1, 2)


def _backward(q, k1, k2, v1, v2, segments, out, lse, d_out, scale, causal, window):
    """Recomputes each tile from ``lse``; returns the gradients of q, k1, k2, v1, v2 (head-major, padded)."""
    sweep = _KeySweep(k1, k2, v1, segments, scale, causal, window)
    layout = sweep.layout
    delta = jnp.sum(d_out * out, axis=-1)  # [G, T]
    per_q = [_blocks(a, layout.block_q) for a in (q, d_out)] + [
        jnp.moveaxis(a.reshape(a.shape[0], -1, layout.block_q), 1, 0) for a in (lse, delta)
    ]

    def query_block(carry, xs):
        dk1, dv1, dk2, dv2 = carry
        index, q_blk, do_blk, lse_blk, delta_blk, q_seg = xs

        def key_block(inner, tile, k1_blk, v1_blk):
            dq, dk2, dv2 = inner
            q_k1, keep, s = tile
            p = jnp.where(keep, jnp.exp(s - lse_blk[..., None, None]), 0.0)
            do_v1 = do_blk[:, :, None, :] * v1_blk[:, None, :, :]  # [G, bi, bj, Dv]
            dp = jnp.einsum("gijd,gkd->gijk", do_v1, v2, precision=_HIGHEST)
            ds = p * (dp - delta_blk[..., None, None])
            ds_k2 = jnp.einsum("gijk,gkd->gijd", ds, k2, precision=_HIGHEST)
            p_v2 = jnp.einsum("gijk,gkd->gijd", p, v2, precision=_HIGHEST)
            dq = dq + scale * jnp.einsum("gijd,gjd->gid", ds_k2, k1_blk, precision=_HIGHEST)
            dk1_blk = scale * jnp.einsum("gijd,gid->gjd", ds_k2, q_blk, precision=_HIGHEST)
            dv1_blk = jnp.einsum("gijd,gid->gjd", p_v2, do_blk, precision=_HIGHEST)
            dk2 = dk2 + scale * _contract_pairs(ds, q_k1)
            dv2 = dv2 + _contract_pairs(p, do_v1)
            return (dq, dk2, dv2), (dk1_blk, dv1_blk)

        (dq, dk2, dv2), (dk1_blocks, dv1_blocks) = sweep.scan(key_block, (jnp.zeros_like(q_blk), dk2, dv2), index,
                                                              q_blk, q_seg)
        unblock = lambda b: jnp.moveaxis(b, 0, 1).reshape(b.shape[1], -1, b.shape[-1])  # noqa: E731
        return (dk1 + unblock(dk1_blocks), dv1 + unblock(dv1_blocks), dk2, dv2), dq

    init = (jnp.zeros_like(k1), jnp.zeros_like(v1), jnp.zeros_like(k2), jnp.zeros_like(v2))
    (dk1, dv1, dk2, dv2), dq_blocks = jax.lax.scan(query_block, init, (sweep.query_indices, *per_q, sweep.q_segments))
    dq = jnp.moveaxis(dq_blocks, 0, 1).reshape(q.shape)
    return dq, dk1, dk2, dv1, dv2


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _streaming(q, k1, k2, v1, v2, segments, scale, causal, window):
    return _forward(q, k1, k2, v1, v2, segments, scale, causal, window)[0]


def _streaming_fwd(q, k1, k2, v1, v2, segments, scale, causal, window):
    out, lse = _forward(q, k1, k2, v1, v2, segments, scale, causal, window)
    return out, (q, k1, k2, v1, v2, segments, out, lse)


def _streaming_bwd(scale, causal, window, residuals, d_out):
    return (*_backward(*residuals, d_out, scale, causal, window), None)


_streaming.defvjp(_streaming_fwd, _streaming_bwd)


def _xla(q, k1, k2, v1, v2, segment_ids, scale, causal, window):
    batch, length, heads = q.shape[:3]
    layout = _Layout(length)

    def head_major(a, padded):
        a = jnp.swapaxes(a.astype(_F32), 1, 2).reshape(batch * heads, length, a.shape[-1])
        return jnp.pad(a, ((0, 0), (0, padded - length), (0, 0)))

    segments = None
    if segment_ids is not None:  # [G, T] in head_major's order; padded tokens are masked by position already
        per_head = jnp.repeat(segment_ids, heads, axis=0)
        pad = lambda padded: jnp.pad(per_head, ((0, 0), (0, padded - length)))  # noqa: E731
        segments = (pad(layout.padded_q), pad(layout.padded_j), per_head)
    # Queries pad to the query block, k1/v1 to the key block (padded pairs are masked), k2/v2 not at all.
    out = _streaming(
        head_major(q, layout.padded_q), head_major(k1, layout.padded_j), head_major(k2, length),
        head_major(v1, layout.padded_j), head_major(v2, length), segments, scale, causal, window,
    )
    return jnp.swapaxes(out[:, :length].reshape(batch, heads, length, -1), 1, 2)


def _pallas(q, k1, k2, v1, v2, segment_ids, scale, causal, window, block_sizes=None, interpret=None):
    del segment_ids  # None: the dispatcher refuses segment_ids for impl="pallas"
    # Head-major [B * H, T, d], every operand padded to a length all the kernels' blocks divide.
    return pallas_tensor_attention(q, k1, k2, v1, v2, scale=scale, causal=causal, window=window,
                                   block_sizes=block_sizes, interpret=interpret)


_IMPLEMENTATIONS = {"reference": _reference, "xla": _xla, "pallas": _pallas}


def tensor_attention(
    q: jax.Array,
    k1: jax.Array,
    k2: jax.Array,
    v1: jax.Array,
    v2: jax.Array,
    *,
    scale: Optional[float] = None,
    causal: bool = True,
    window: Optional[tuple[int, int]] = None,
    segment_ids: Optional[jax.Array] = None,
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
) -> jax.Array:
    """2-simplicial attention ``[B, T, H, D]^3 x [B, T, H, Dv]^2 -> [B, T, H, Dv]`` (see the module docstring).

    Args:
      scale: default ``D ** -0.5`` (Alman & Song use ``1 / D``).
      causal: pairs with ``j, k <= i`` only (the default, as in the other attention ops);
        ``causal=False``: every pair of the sequence (or segment).
      window: ``(w1, w2)``: the causal sliding window ``i - w1 < j <= i``, ``i - w2 < k <= i``.
      segment_ids: ``[B, T]`` ints (packed sequences): a query sees only pairs of its own segment.
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``TensorBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).
      impl: ``"reference"``, ``"xla"``, ``"pallas"`` or ``"auto"`` (the Pallas kernels on GPU and TPU
        where they take the call, else ``"xla"``; the kernels have no ``segment_ids``).

    Returns:
      ``[B, T, H, Dv]`` in ``v1``'s dtype.

    Example::

        q = k1 = k2 = v1 = v2 = jnp.ones((2, 32, 4, 16))  # [B, T, H, D]
        o = tensor_attention(q, k1, k2, v1, v2, window=(8, 8))  # [2, 32, 4, 16]
    """
    for name, a in (("q", q), ("k1", k1), ("k2", k2), ("v1", v1), ("v2", v2)):
        require_rank("tensor_attention", name, a, "B, T, H, D")
        require_floating("tensor_attention", name, a)
    require_nonempty("tensor_attention", "q", q.shape[1])
    if k1.shape != q.shape or k2.shape != q.shape:
        raise ValueError(f"tensor_attention: q, k1, k2 must share a shape; got {q.shape}, {k1.shape}, {k2.shape}")
    if v1.shape != v2.shape or v1.shape[:3] != q.shape[:3]:
        raise ValueError(f"tensor_attention: v1, v2 must be [B, T, H, Dv] with [B, T, H] = {q.shape[:3]}; "
                         f"got {v1.shape}, {v2.shape}")
    if window is not None and (len(window) != 2 or min(window) < 1):
        raise ValueError(f"tensor_attention: `window` must be two positive ints (w1, w2), got {window!r}")
    require_segment_ids("tensor_attention", segment_ids, q.shape[:2])
    require_scale("tensor_attention", scale)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    window = None if window is None else (int(window[0]), int(window[1]))
    unsupported = None if segment_ids is None else "segment_ids"
    attend = resolve_impl("tensor_attention", impl, _IMPLEMENTATIONS, pallas_unsupported=unsupported,
                          pallas_options=dict(block_sizes=block_sizes, interpret=interpret))
    return attend(q, k1, k2, v1, v2, segment_ids, scale, bool(causal), window).astype(v1.dtype)

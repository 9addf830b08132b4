"""Linear attention with optional decay: one recurrence for plain, RetNet/Lightning and Mamba-2 gates.

docs/linear_attention.md#one-recurrence. Per batch and head, with state ``S`` ``[K, V]`` in fp32:

    S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t

(causal); non-causal: ``o_t = scale * q_t (S_0 + sum_s k_s^T v_s)`` over the token's segment.
With ``normalize``, ``o_t /= scale * q_t z_t + eps`` where ``z_t`` is the same recurrence on
``k_t`` alone. With ``segment_ids``, the state is dropped at every change of segment id (packed
sequences); ``initial_state`` belongs to the segment of the first token.

Signed transitions (Grazzi et al., ICLR 2025, "Unlocking State-Tracking in Linear RNNs Through
Negative Eigenvalues"): with ``g_negative [B, T, H]`` bool the transition is
``a_t = sigma_t exp(g_t + g_gamma)``, ``sigma_t = -1`` where ``g_negative`` is True, so ``a_t`` can
reach ``(-1, 0)`` (``g_t = 0`` with ``sigma_t = -1`` flips the state's sign: parity in one layer).
The magnitude stays in log space. With ``s_t = sigma_1 ... sigma_t`` (the parity of the negative
transitions so far, ``s_0 = 1``) the signed state is ``S_t = s_t S'_t``, where ``S'`` is the
recurrence of the magnitudes ``|a_t|`` on the keys ``s_t k_t`` (by induction:
``a_t S_{t-1} = s_t |a_t| S'_{t-1}`` and ``k_t = s_t (s_t k_t)``; segment resets change nothing), so
``o_t = scale (s_t q_t) S'_t``. The chunked and Pallas paths run that unsigned recurrence on
``s_t q_t, s_t k_t`` (an exact sign flip; in a chunk the decay between ``i >= j`` is
``s_i s_j exp(G_i - G_j)``, the parity of the negatives in ``(j, i]``) and return ``s_T S'_T``.

Implementations:
  * ``"reference"``: token by token (``lax.scan``) in fp32 at HIGHEST precision; non-causal as a
    dense masked product. The test oracle.
  * ``"xla"``: the chunked Lightning-Attention-2 tiling: a scan over chunks of C tokens carrying
    one ``[K, V]`` state; within a chunk a masked ``(Q K^T * decay) V`` plus ``(Q * exp(G)) S``.
    Memory is linear in T and no per-chunk states are kept beyond what autodiff saves.
  * ``"pallas"``: the same tiling as GPU (Triton) and TPU (Mosaic) kernels with a recomputing
    backward (:mod:`pallas_kernels.linear_attention`); the Pallas interpreter on CPU. No
    ``segment_ids``; ``g_negative`` through the sign flip above, outside the kernels.
"""

from collections.abc import Callable
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import (
    require_floating, require_nonempty, require_positive_int, require_rank, require_scale, require_segment_ids,
)
from jaxattn.ops.chunks import chunk_major, pad_time
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.linear_attention_parts import (
    combined_log_decay, fold_transition_signs, normalized, with_normalizer_column,
)
from jaxattn.ops.segments import ends_from_starts, same_segment, segment_index, segment_starts
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.linear_attention import chunked_linear_attention

_HIGHEST = jax.lax.Precision.HIGHEST
_UNROLL = 4  # chunks per scan iteration of the xla path


class _Inputs(NamedTuple):
    """Validated inputs: q, k ``[B, T, H, K]``; v ``[B, T, H, V']``; ``log_decay [B, T, H]`` fp32 or
    None; ``state [B, H, K, V']`` fp32; ``boundary [B, T]`` bool or None (True where a new segment
    starts); ``dot_general``, the product behind every contraction (``lax.dot_general`` or an
    L-Matmul); ``negative [B, T, H]`` bool or None (True where the transition is negative)."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    log_decay: Optional[jax.Array]
    state: jax.Array
    boundary: Optional[jax.Array]
    dot_general: Callable = jax.lax.dot_general
    negative: Optional[jax.Array] = None

    def einsum(self, spec: str, a: jax.Array, b: jax.Array, **kwargs) -> jax.Array:
        """``jnp.einsum`` of two operands through ``dot_general``."""
        return jnp.einsum(spec, a, b, _dot_general=self.dot_general, **kwargs)


# ----------------------------------------------------------------------------- reference


def _reference_causal(x: _Inputs, scale: float, chunk_size: int):
    del chunk_size
    batch, length, heads = x.q.shape[:3]
    log_decay = jnp.zeros((batch, length, heads), jnp.float32) if x.log_decay is None else x.log_decay
    keep = jnp.ones((batch, length), bool) if x.boundary is None else ~x.boundary
    negative = jnp.zeros((batch, length, heads), bool) if x.negative is None else x.negative

    def step(state, inputs):
        q_t, k_t, v_t, a_t, negative_t, keep_t = inputs
        decay = jnp.where(negative_t, -jnp.exp(a_t), jnp.exp(a_t)) * keep_t[:, None]
        state = decay[..., None, None] * state + x.einsum("bhk,bhv->bhkv", k_t, v_t, precision=_HIGHEST)
        return state, scale * x.einsum("bhk,bhkv->bhv", q_t, state, precision=_HIGHEST)

    time_major = [jnp.moveaxis(a.astype(jnp.float32), 1, 0) for a in (x.q, x.k, x.v, log_decay)]
    final, o = jax.lax.scan(step, x.state, (*time_major, jnp.moveaxis(negative, 1, 0), jnp.moveaxis(keep, 1, 0)))
    return jnp.moveaxis(o, 0, 1), final


def _reference_noncausal(x: _Inputs, scale: float, chunk_size: int):
    """Dense: ``o_i = scale q_i (S_0 [i in first segment] + sum_{j in segment(i)} k_j^T v_j)``."""
    q, k, v = (a.astype(jnp.float32) for a in (x.q, x.k, x.v))
    segment = jnp.zeros(q.shape[:2], jnp.int32) if x.boundary is None else segment_index(x.boundary, axis=1)
    same = same_segment(segment, segment)
    scores = x.einsum("bihk,bjhk->bhij", q, k, precision=_HIGHEST) * same[:, None]
    o = x.einsum("bhij,bjhv->bihv", scores, v, precision=_HIGHEST)
    first = (segment == 0).astype(jnp.float32)[:, :, None, None]
    o = scale * (o + first * x.einsum("bihk,bhkv->bihv", q, x.state, precision=_HIGHEST))
    # The final state is what the causal recurrence ends with: the last segment's sum.
    last = (segment == segment[:, -1:]).astype(jnp.float32)
    final = x.einsum("bjhk,bjhv->bhkv", k * last[:, :, None, None], v, precision=_HIGHEST)
    final = final + (segment[:, -1] == 0).astype(jnp.float32)[:, None, None, None] * x.state
    return o, final


# ----------------------------------------------------------------------------- chunked


def _fold_signs(x: _Inputs) -> tuple[_Inputs, Optional[jax.Array]]:
    """``x`` as the unsigned recurrence (:func:`fold_transition_signs`) and ``s_T``; None: no signs."""
    if x.negative is None:
        return x, None
    q, k, last_sign = fold_transition_signs(x.q, x.k, x.negative)
    return x._replace(q=q, k=k, negative=None), last_sign


def _unfold_signs(final: jax.Array, last_sign: Optional[jax.Array]) -> jax.Array:
    return final if last_sign is None else final * last_sign[..., None, None]


def _pad_to_chunks(x: _Inputs, chunk_size: int) -> _Inputs:
    """Pads T to a multiple of C. Zero keys and values add nothing to the state and a zero log
    decay keeps it, so the state after the padding is the state after the last real token."""
    pad = lambda a: pad_time(a, chunk_size)  # noqa: E731
    return x._replace(q=pad(x.q), k=pad(x.k), v=pad(x.v), log_decay=pad(x.log_decay), boundary=pad(x.boundary))


def _chunked_causal(x: _Inputs, scale: float, chunk_size: int):
    """Lightning-Attention-2 tiling as a scan over chunks carrying one ``[B, H, K, V]`` state.

    Per chunk, with ``G_i`` the in-chunk cumulative log decay (inclusive):
      ``O = (Q K^T scale .* exp(G_i - G_j) .* M) V + scale (Q .* exp(G)) S``,
      ``S <- exp(G_C) S + sum_r exp(G_C - G_r) k_r^T v_r``,
    where ``M`` is causal and same-segment, the carried ``S`` reaches only tokens before the
    chunk's first segment start, and only tokens of the chunk's last segment feed the new state.
    Signed transitions (``g_negative``) are folded into Q and K first (:func:`_fold_signs`): the
    scan then runs on magnitudes and carries ``S' = s_t S_t`` (module docstring).

    Each chunk is moved to head-major ``[B, H, C, D]`` inside the scan body, where it is in cache
    (transposing the whole ``[B, T, H, D]`` input first is slower on CPU; with B = 1 the scan
    slices the input in place, see :func:`jaxattn.ops.chunks.chunk_major`), and the scan is unrolled
    by ``_UNROLL`` chunks so that XLA sees several independent products at once.
    """
    batch, length, heads = x.q.shape[:3]
    x, last_sign = _fold_signs(x)
    x = _pad_to_chunks(x, chunk_size)
    q, k, v = (chunk_major(a, chunk_size) for a in (x.q, x.k, x.v))  # [N, B, C, H, D]
    causal = jnp.tril(jnp.ones((chunk_size, chunk_size), bool))
    unbatched = (lambda a: a[0]) if batch == 1 else (lambda a: a)  # noqa: E731  the scan's output layout
    # Plain linear attention needs neither decay factors nor segment masks: skip that work.
    weighted = x.log_decay is not None or x.boundary is not None
    chunks = (q, k, v)
    if weighted:
        if x.log_decay is None:
            cum = jnp.zeros((*q.shape[:-2], heads), jnp.float32)
        else:
            cum = jnp.cumsum(chunk_major(x.log_decay, chunk_size), axis=-2)  # [N, B, C, H]
        if x.boundary is None:
            starts = jnp.zeros(q.shape[:-2], jnp.int32)
        else:
            starts = segment_index(chunk_major(x.boundary, chunk_size), axis=-1)  # [N, B, C]
        chunks = (q, k, v, cum, starts)

    def chunk_step(state, chunk):
        if batch == 1:
            chunk = [a[None] for a in chunk]
        q_c, k_c, v_c = (jnp.swapaxes(a, 1, 2) for a in chunk[:3])  # [B, H, C, D]
        v_c = v_c.astype(jnp.float32)
        scores = scale * x.einsum("bhik,bhjk->bhij", q_c, k_c, preferred_element_type=jnp.float32)
        if not weighted:
            o = x.einsum("bhij,bhjv->bhiv", jnp.where(causal, scores, 0.0), v_c)
            o = o + scale * x.einsum("bhik,bhkv->bhiv", q_c, state, preferred_element_type=jnp.float32)
            update = x.einsum("bhjk,bhjv->bhkv", k_c, v_c, preferred_element_type=jnp.float32)
            return state + update, unbatched(jnp.swapaxes(o, 1, 2))
        cum_c, starts_c = chunk[3:]
        cum_h = jnp.swapaxes(cum_c, 1, 2)[..., None]  # [B, H, C, 1]
        mask = causal & same_segment(starts_c, starts_c)  # [B, C, C]
        # Mask before exp: masked pairs get -inf, never inf - inf.
        log_weights = jnp.where(mask[:, None], cum_h - jnp.swapaxes(cum_h, 2, 3), -jnp.inf)
        o = x.einsum("bhij,bhjv->bhiv", scores * jnp.exp(log_weights), v_c)
        from_start = (starts_c == 0)[:, None, :, None]  # [B, 1, C, 1]: tokens the carried state reaches
        query_weights = jnp.where(from_start, jnp.exp(cum_h), 0.0)  # [B, H, C, 1]
        o = o + scale * x.einsum("bhik,bhkv->bhiv", q_c * query_weights, state)
        to_end = (starts_c == starts_c[:, -1:])[:, None, :, None]  # tokens of the last segment
        key_weights = jnp.where(to_end, jnp.exp(cum_h[:, :, -1:] - cum_h), 0.0)
        update = x.einsum("bhjk,bhjv->bhkv", k_c * key_weights, v_c, preferred_element_type=jnp.float32)
        carries = (starts_c[:, -1] == 0)[:, None]  # no segment start in the chunk: [B, 1]
        decay = jnp.where(carries, jnp.exp(cum_c[:, -1]), 0.0)  # [B, H]
        return decay[..., None, None] * state + update, unbatched(jnp.swapaxes(o, 1, 2))

    final, o = jax.lax.scan(chunk_step, x.state, chunks, unroll=min(_UNROLL, q.shape[0]))
    o = (o if batch == 1 else jnp.moveaxis(o, 0, 1)).reshape(batch, -1, heads, o.shape[-1])
    return o[:, :length], _unfold_signs(final, last_sign)


def _flip(x: _Inputs) -> _Inputs:
    """The time-reversed inputs (segment starts move to the last token of each segment)."""
    reverse = lambda a: None if a is None else jnp.flip(a, axis=1)  # noqa: E731
    boundary = None if x.boundary is None else jnp.flip(ends_from_starts(x.boundary), axis=1)
    return x._replace(q=reverse(x.q), k=reverse(x.k), v=reverse(x.v), log_decay=None, state=jnp.zeros_like(x.state),
                      boundary=boundary, negative=None)


def _chunked_noncausal(x: _Inputs, scale: float, chunk_size: int):
    """Without segments ``scale Q (S_0 + K^T V)``; with them, a forward plus a reversed causal pass
    (each includes the token itself, so its own term is subtracted once)."""
    if x.boundary is None:
        total = x.state + x.einsum("bthk,bthv->bhkv", x.k, x.v, preferred_element_type=jnp.float32)
        return scale * x.einsum("bthk,bhkv->bthv", x.q, total, preferred_element_type=jnp.float32), total
    forward, final = _chunked_causal(x, scale, chunk_size)
    backward, _ = _chunked_causal(_flip(x), scale, chunk_size)
    own = scale * x.einsum("bthk,bthk->bth", x.q, x.k, preferred_element_type=jnp.float32)
    own = x.einsum("bth,bthv->bthv", own, x.v.astype(jnp.float32))
    return forward + jnp.flip(backward, axis=1) - own, final


def _pallas_causal(x: _Inputs, scale: float, chunk_size: int, block_sizes=None, interpret=None):
    """The Pallas kernels of :mod:`pallas_kernels.linear_attention` on head-major, chunk-padded inputs
    (no segments: :func:`linear_attention` refuses them through the dispatcher)."""
    batch, length = x.q.shape[:2]
    x, last_sign = _fold_signs(x)  # the kernels see magnitudes only
    x = _pad_to_chunks(x, chunk_size)
    head_major = lambda a: None if a is None else jnp.swapaxes(a, 1, 2)  # noqa: E731
    block_sizes = ChunkedBlockSizes.tuned(block_sizes, "linear_attention", jnp.result_type(x.q, x.k, x.v),
                                          length=length, head_dim=x.q.shape[-1], value_dim=x.v.shape[-1],
                                          batch_heads=batch * x.q.shape[2], chunk_size=chunk_size)
    o, final = chunked_linear_attention(*map(head_major, (x.q, x.k, x.v, x.log_decay)), x.state, scale, chunk_size,
                                        block_sizes, interpret)
    return jnp.swapaxes(o, 1, 2)[:, :length], _unfold_signs(final, last_sign)


def _pallas_noncausal(x: _Inputs, scale: float, chunk_size: int, block_sizes=None, interpret=None):
    """Without segments non-causal linear attention is two matrix products, XLA's own strength (no
    kernel runs: ``block_sizes`` and ``interpret`` have nothing to tune)."""
    del block_sizes, interpret
    return _chunked_noncausal(x, scale, chunk_size)


_IMPLEMENTATIONS = {
    "reference": {True: _reference_causal, False: _reference_noncausal},
    "xla": {True: _chunked_causal, False: _chunked_noncausal},
    "pallas": {True: _pallas_causal, False: _pallas_noncausal},
}


# ----------------------------------------------------------------------------- public op


def _validate(q, k, v, g, g_negative, g_gamma, causal, normalize, initial_state, segment_ids, chunk_size, scale):
    for name, a in (("q", q), ("k", k), ("v", v)):
        require_rank("linear_attention", name, a, "B, T, H, D")
        require_floating("linear_attention", name, a)
    if k.shape != q.shape:
        raise ValueError(f"linear_attention: `k` must have the shape of `q` {q.shape}, got {k.shape}")
    batch, length, heads, key_dim = q.shape
    require_nonempty("linear_attention", "q", length)
    if v.shape[:3] != (batch, length, heads):
        raise ValueError(f"linear_attention: `v` must be [B, T, H, V] with [B, T, H] = {q.shape[:3]}, got {v.shape}")
    if g is not None and g.shape != (batch, length, heads):
        raise ValueError(f"linear_attention: `g` must be [B, T, H] = {(batch, length, heads)}, got {g.shape}")
    if g_negative is not None:
        if g_negative.shape != (batch, length, heads):
            raise ValueError(
                f"linear_attention: `g_negative` must be [B, T, H] = {(batch, length, heads)}, got {g_negative.shape}"
            )
        if g_negative.dtype != jnp.bool_:
            raise TypeError(
                f"linear_attention: `g_negative` must be bool (True: negative transition), got {g_negative.dtype}"
            )
        if normalize:
            raise ValueError(
                "linear_attention: normalize=True needs positive transitions; with `g_negative` the normaliser "
                "z_t (a signed sum of keys) can cross zero"
            )
    if g_gamma is not None and g_gamma.shape != (heads,):
        raise ValueError(f"linear_attention: `g_gamma` must be [H] = {(heads,)}, got {g_gamma.shape}")
    if not causal and (g is not None or g_gamma is not None or g_negative is not None):
        raise ValueError(
            "linear_attention: gates `g` / `g_negative` / `g_gamma` need causal=True (a decay has a direction)"
        )
    value_dim = v.shape[-1] + (1 if normalize else 0)
    if initial_state is not None and initial_state.shape != (batch, heads, key_dim, value_dim):
        extra = " (V + 1: the last column is the normaliser's state)" if normalize else ""
        raise ValueError(
            f"linear_attention: `initial_state` must be [B, H, K, V] = {(batch, heads, key_dim, value_dim)}{extra}, "
            f"got {initial_state.shape}"
        )
    require_segment_ids("linear_attention", segment_ids, (batch, length))
    require_positive_int("linear_attention", "chunk_size", chunk_size)
    require_scale("linear_attention", scale)


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    g: Optional[jax.Array] = None,
    g_negative: Optional[jax.Array] = None,
    g_gamma: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    causal: bool = True,
    normalize: bool = False,
    eps: float = 1e-6,
    initial_state: Optional[jax.Array] = None,
    output_final_state: bool = False,
    segment_ids: Optional[jax.Array] = None,
    chunk_size: int = 64,
    dot_general: Optional[Callable] = None,
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
):
    """Linear attention ``o_t = scale q_t S_t``, ``S_t = sigma_t exp(g_t + g_gamma) S_{t-1} + k_t^T v_t``.

    Args:
      q, k: queries and keys (after any feature map) ``[B, T, H, K]``.
      v: values ``[B, T, H, V]``.
      g: per-token log gates ``[B, T, H]`` (natural log, <= 0), Mamba-2 style: with ``g_negative``
        the log of the transition's magnitude ``log |a_t|``.
      g_negative: ``[B, T, H]`` bool, True where the transition is negative (``sigma_t = -1``; else
        ``sigma_t = 1``): ``a_t = -exp(g_t + g_gamma)`` there, so transitions lie in ``[-1, 1]``
        (Grazzi et al. 2025; ``g = 0`` with True flips the state). Causal only; not with
        ``normalize``. Without ``g`` or ``g_gamma`` the magnitude is 1. Not differentiable (a sign).
      g_gamma: constant per-head log decay ``[H]`` (RetNet / Lightning).
      scale: default ``K ** -0.5``.
      causal: causal recurrence, or every token attends to its whole segment (no gates).
      normalize: divide by ``scale q_t z_t + eps``, ``z_t`` the same recurrence over ``k_t``. Only
        for positive features (``q_t . k_s > 0``, e.g. after ``elu + 1``, Hedgehog, Performer or
        Taylor maps): with signed q, k the denominator crosses zero and the outputs blow up, which
        the op cannot detect. :class:`jaxattn.nn.LinearAttention` refuses signed maps with it.
      initial_state: ``[B, H, K, V]`` fp32 (``V + 1`` with ``normalize``: normaliser last).
      output_final_state: also return the final state.
      segment_ids: ``[B, T]`` ints; the state resets where the id changes.
      chunk_size: tokens per chunk of the ``xla`` path.
      dot_general: replaces ``lax.dot_general`` in every product of q, k, v and the state (e.g. an
        L-Matmul, :func:`jaxattn.ops.lmul_dot_general`); it runs on the reference and xla paths
        (``impl="pallas"`` or ``"auto"`` then use xla: :mod:`jaxattn.ops.dispatch`).
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``ChunkedBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).
      impl: ``"reference"``, ``"xla"``, ``"pallas"`` or ``"auto"`` (pallas on GPU and TPU where it
        supports the inputs, else xla).

    Returns:
      ``o [B, T, H, V]`` in ``v``'s dtype, and with ``output_final_state`` the final state
      ``[B, H, K, V]`` fp32 (``(o, state)``).

    Example::

        q = k = v = jnp.ones((2, 128, 4, 32))  # [B, T, H, D]
        g = jnp.full((2, 128, 4), -0.1)  # log decays [B, T, H]
        o, state = linear_attention(q, k, v, g=g, output_final_state=True)  # [2, 128, 4, 32], [2, 4, 32, 32]
    """
    _validate(q, k, v, g, g_negative, g_gamma, causal, normalize, initial_state, segment_ids, chunk_size, scale)
    batch, length, heads, key_dim = q.shape
    scale = key_dim**-0.5 if scale is None else float(scale)
    log_decay = combined_log_decay(g, g_gamma, (batch, length, heads))
    values = with_normalizer_column(v) if normalize else v
    state = (
        jnp.zeros((batch, heads, key_dim, values.shape[-1]), jnp.float32)
        if initial_state is None
        else initial_state.astype(jnp.float32)
    )
    boundary = None if segment_ids is None else segment_starts(segment_ids)
    core = resolve_impl("linear_attention", impl, _IMPLEMENTATIONS,
                        pallas_unsupported=None if segment_ids is None else "segment_ids",
                        dot_general=dot_general, takes_dot_general=("reference", "xla"),
                        pallas_options=dict(block_sizes=block_sizes, interpret=interpret))[bool(causal)]
    inputs = _Inputs(q, k, values, log_decay, state, boundary, dot_general or jax.lax.dot_general, g_negative)
    o, final = core(inputs, scale, chunk_size)
    if normalize:
        o = normalized(o, eps)
    o = o.astype(v.dtype)
    return (o, final) if output_final_state else o

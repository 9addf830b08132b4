"""The delta rule: DeltaNet, Gated DeltaNet and DeltaProduct as one recurrence.

Per batch and head, with state ``S`` ``[K, V]`` in fp32 and ``n = householder_steps``, token ``t``
first decays the state once and then takes ``n`` delta steps with its own keys, values and betas
(rows ``k_{t,j}``, ``v_{t,j}``, scalars ``beta_{t,j}``):

    S <- exp(g_t) S
    S <- (I - beta_{t,j} k_{t,j}^T k_{t,j}) S + beta_{t,j} k_{t,j}^T v_{t,j}     j = 1 .. n
    o_t = scale * q_t S

Each step is one step of online gradient descent on ``||k S - v||^2 / 2`` with step ``beta``: it
replaces the value stored at ``k`` instead of adding to it. The transition ``I - beta k^T k`` (unit
``k``) has eigenvalues 1 and ``1 - beta``: with ``beta`` in ``[0, 2]`` they reach -1, which is what
lets one layer track parity (``n = 1``) and, with ``n >= 2``, products of reflections such as
rotations (permutation groups). ``n = 1`` without ``g`` is DeltaNet, with ``g`` Gated DeltaNet;
``n > 1`` is DeltaProduct. With ``segment_ids`` the state is dropped at every change of segment id
(packed sequences); ``initial_state`` belongs to the first token's segment. See docs/delta_rule.md.

Implementations:
  * ``"reference"``: token by token (``lax.scan``) in fp32 at HIGHEST precision. The test oracle.
  * ``"xla"``: the chunked WY/UT form, a scan over chunks carrying one fp32 ``[K, V]`` state (see
    :func:`_chunk_terms`). Memory is linear in T.
  * ``"pallas"``: GPU (Triton) and TPU (Mosaic) kernels (:mod:`pallas_kernels.delta_rule`) on the
    sequence of delta steps, where DeltaProduct is DeltaNet with each token's query at its last
    step; the Pallas interpreter on CPU. No ``segment_ids`` (``"auto"`` then uses ``"xla"``).
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import (
    require_floating, require_nonempty, require_positive_int, require_rank, require_scale, require_segment_ids,
)
from jaxattn.ops.chunks import chunk_major, pad_time
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.segments import same_segment, segment_index, segment_starts
from jaxattn.ops.triangular import unit_lower_triangular_inverse
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.delta_rule import chunked_delta_rule

_HIGHEST = jax.lax.Precision.HIGHEST
_UNROLL = 2  # chunks per scan iteration of the xla path


class _Inputs(NamedTuple):
    """Validated inputs. Tokens: q ``[B, T, H, K]``, ``log_decay [B, T, H]`` fp32 or None,
    ``boundary [B, T]`` bool or None (True where a new segment starts). Delta steps (``steps`` per
    token, token-major): k ``[B, T*n, H, K]``, v ``[B, T*n, H, V]``, beta ``[B, T*n, H]``.
    ``state [B, H, K, V]`` fp32."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    beta: jax.Array
    log_decay: Optional[jax.Array]
    state: jax.Array
    boundary: Optional[jax.Array]
    steps: int


# ----------------------------------------------------------------------------- reference


def _reference(x: _Inputs, scale: float, chunk_size: int):
    del chunk_size
    batch, length, heads = x.q.shape[:3]
    n = x.steps
    log_decay = jnp.zeros((batch, length, heads), jnp.float32) if x.log_decay is None else x.log_decay
    keep = jnp.ones((batch, length), bool) if x.boundary is None else ~x.boundary
    per_token = lambda a: a.reshape(batch, length, n, *a.shape[2:])  # noqa: E731  [B, T, n, ...]

    def step(state, inputs):
        q_t, k_t, v_t, beta_t, a_t, keep_t = inputs  # k_t [B, n, H, K], beta_t [B, n, H]
        state = (jnp.exp(a_t) * keep_t[:, None])[..., None, None] * state
        for j in range(n):
            prediction = jnp.einsum("bhk,bhkv->bhv", k_t[:, j], state, precision=_HIGHEST)
            correction = beta_t[:, j, :, None] * (v_t[:, j] - prediction)
            state = state + jnp.einsum("bhk,bhv->bhkv", k_t[:, j], correction, precision=_HIGHEST)
        return state, scale * jnp.einsum("bhk,bhkv->bhv", q_t, state, precision=_HIGHEST)

    inputs = (x.q, per_token(x.k), per_token(x.v), per_token(x.beta), log_decay, keep)
    time_major = [jnp.moveaxis(a.astype(jnp.float32) if a.dtype != bool else a, 1, 0) for a in inputs]
    final, o = jax.lax.scan(step, x.state, time_major)
    return jnp.moveaxis(o, 0, 1), final


# ----------------------------------------------------------------------------- chunked


class _ChunkTerms(NamedTuple):
    """A chunk's state-independent terms (head-major fp32; ``C`` tokens, ``L`` steps); with the state
    ``S`` before the chunk, the pseudo-values are ``u - w S`` and (:func:`_apply_chunk`)

        ``o = scores (u - w S) + queries S``,   ``S <- decay S + carried_keys^T (u - w S)``.
    """

    scores: jax.Array  # [B, H, C, L]  scale (q . k) exp(G_out - G_r), causal and same segment
    u: jax.Array  # [B, H, L, V]
    w: jax.Array  # [B, H, L, K]
    queries: jax.Array  # [B, H, C, K]  scale q exp(G_out) where the carried state reaches the token
    carried_keys: jax.Array  # [B, H, L, K]  k exp(G_L - G_r) on the chunk's last segment
    decay: jax.Array  # [B, H]  exp(G_L), 0 after a segment start


def _chunk_terms(q, k, v, beta, cum, starts, scale: float, steps: int) -> _ChunkTerms:
    """The WY/UT form of one chunk of ``C`` tokens = ``L = C n`` delta steps, head-major fp32:
    q ``[B, H, C, K]``, k ``[B, H, L, K]``, v ``[B, H, L, V]``, beta ``[B, H, L]``; ``cum [B, H, L]`` the
    in-chunk cumulative log decay per step (inclusive; a token's decay sits on its first step), None
    without gates; ``starts [B, L]`` the in-chunk count of segment starts (0: the carried state
    reaches the step), None for one segment.

    With ``S_0`` the state before the chunk and ``G = cum``, step ``s`` stores
    ``u_s = beta_s (v_s - exp(G_s) k_s S_0 - sum_{r<s} exp(G_s - G_r) (k_s . k_r) u_r)``, so
    ``(I + A) u = beta V - beta exp(G) K S_0`` with ``A`` strictly lower triangular (same segment).
    One unit-triangular inverse (matrix products, :mod:`jaxattn.ops.triangular`) gives ``u = U - W S_0`` (``U``, ``W`` independent of the state); then
    ``S_after(s) = exp(G_s) S_0 + sum_{r<=s} exp(G_s - G_r) k_r^T u_r`` read at each token's last step
    gives the outputs, and at the chunk's last step the next state.
    """
    length = k.shape[2]
    tokens = q.shape[2]
    batch = k.shape[0]
    if starts is None:  # one segment: every mask is the causal one
        starts = jnp.zeros((batch, length), jnp.int32)
    gated = cum is not None

    def weights(mask, log_weights):  # exp(log_weights) where mask, else 0 (never inf - inf)
        if not gated:
            return mask.astype(jnp.float32)
        return jnp.exp(jnp.where(mask, log_weights(), -jnp.inf))

    def decays(mask, log_decay):  # [B, H, ...] exp(log_decay) where mask, else 0
        mask = jnp.broadcast_to(mask, (*k.shape[:2], *mask.shape[2:]))
        return weights(mask, log_decay)

    same = same_segment(starts, starts)  # [B, L, L]
    strict = jnp.tril(jnp.ones((length, length), bool), -1)
    gram = jnp.einsum("bhik,bhjk->bhij", k, k) * weights((strict & same)[:, None],
                                                         lambda: cum[..., None] - cum[:, :, None, :])
    system = jnp.eye(length, dtype=jnp.float32) + beta[..., None] * gram
    beta_col = beta[..., None]
    reach = decays((starts == 0)[:, None, :, None], lambda: cum[..., None])  # [B, H, L, 1] exp(G) from the state
    rhs = jnp.concatenate([beta_col * v, beta_col * reach * k], axis=-1)
    solved = unit_lower_triangular_inverse(system) @ rhs
    u, w = solved[..., : v.shape[-1]], solved[..., v.shape[-1]:]

    last_steps = jnp.arange(tokens) * steps + steps - 1  # [C] the step each token's output reads
    cum_out = lambda: cum[:, :, last_steps, None]  # noqa: E731  [B, H, C, 1]
    starts_out = starts[:, last_steps]  # [B, C]
    reads = (jnp.arange(length)[None, :] <= last_steps[:, None]) & same_segment(starts_out, starts)
    scores = scale * jnp.einsum("bhik,bhjk->bhij", q, k) * weights(reads[:, None],
                                                                   lambda: cum_out() - cum[:, :, None, :])
    queries = scale * q * decays((starts_out == 0)[:, None, :, None], cum_out)
    to_end = (starts == starts[:, -1:])[:, None, :, None]  # steps of the chunk's last segment
    carried_keys = k * decays(to_end, lambda: cum[..., -1:, None] - cum[..., None])
    decay = decays((starts[:, -1] == 0)[:, None], lambda: cum[..., -1])
    return _ChunkTerms(scores, u, w, queries, carried_keys, decay)


def _apply_chunk(terms: _ChunkTerms, state: jax.Array):
    """The chunk's outputs ``[B, H, C, V]`` and the state after it, from the state before it. ``w S``
    and ``queries S`` are one product (on CPU, fewer and larger products run closer to the matmul
    rate: 5 % of the forward at C = 16)."""
    steps = terms.w.shape[2]
    read = jnp.einsum("bhlk,bhkv->bhlv", jnp.concatenate([terms.w, terms.queries], axis=2), state)
    pseudo_values = terms.u - read[:, :, :steps]
    o = read[:, :, steps:] + jnp.einsum("bhil,bhlv->bhiv", terms.scores, pseudo_values)
    state = terms.decay[..., None, None] * state + jnp.einsum("bhlk,bhlv->bhkv", terms.carried_keys, pseudo_values)
    return o, state


def _tokens_per_chunk(chunk_size: int, steps: int, length: int) -> int:
    """``chunk_size`` counts delta steps: ``chunk_size // n`` tokens (at least one, at most T)."""
    return max(1, min(chunk_size // steps, length))


class _Chunks(NamedTuple):
    """Chunk-major views ``[N, B, ...]`` of the padded inputs and the chunk geometry."""

    arrays: tuple  # q, k, v, beta, cum, starts
    tokens: int  # C
    batch: int
    length: int  # T before padding


def _on_step(a: jax.Array, steps: int, step: int) -> jax.Array:
    """Token values ``[B, T, ...]`` as step values ``[B, T*n, ...]``: on step ``step`` of each token
    (0 the first, -1 the last), zero (False) on the others."""
    if steps == 1:
        return a
    spread = jnp.zeros((*a.shape[:2], steps, *a.shape[2:]), a.dtype).at[:, :, step].set(a)
    return spread.reshape(a.shape[0], -1, *a.shape[2:])


def _chunk(x: _Inputs, chunk_size: int) -> _Chunks:
    """Pads T to a multiple of C tokens and views the inputs chunk-major. Padded steps have zero
    keys, values and betas and a zero log decay: they leave the state as it is. A token's decay and
    segment start sit on its first delta step."""
    batch, length, heads = x.q.shape[:3]
    n = x.steps
    tokens = _tokens_per_chunk(chunk_size, n, length)
    q = chunk_major(pad_time(x.q, tokens), tokens)  # [N, B, C, H, K]
    per_step = lambda a: chunk_major(pad_time(a, tokens * n), tokens * n)  # noqa: E731  [N, B, L, ...]
    k, v, beta = map(per_step, (x.k, x.v, x.beta))
    cum = starts = None  # no gates, one segment
    if x.log_decay is not None:
        cum = jnp.cumsum(per_step(_on_step(x.log_decay, n, 0)), axis=-2)  # [N, B, L, H]
    if x.boundary is not None:
        starts = segment_index(per_step(_on_step(x.boundary, n, 0)), axis=-1)  # [N, B, L]
    return _Chunks((q, k, v, beta, cum, starts), tokens, batch, length)


def _head_major_terms(chunk, scale: float, steps: int) -> _ChunkTerms:
    """:func:`_chunk_terms` of one chunk-major slice ``[B, C, H, ...]`` (``[C, H, ...]`` with B = 1)."""
    q, k, v, beta, cum, starts = chunk
    if q.ndim == 3:  # one sequence: chunk_major dropped the batch axis
        q, k, v, beta, cum, starts = (None if a is None else a[None] for a in chunk)
    q, k, v, beta, cum = (None if a is None else jnp.swapaxes(a.astype(jnp.float32), 1, 2)
                          for a in (q, k, v, beta, cum))
    return _chunk_terms(q, k, v, beta, cum, starts, scale, steps)


def _chunked(x: _Inputs, scale: float, chunk_size: int):
    """The scan over chunks carrying the ``[B, H, K, V]`` state through :func:`_apply_chunk`."""
    chunks = _chunk(x, chunk_size)
    batch, heads = chunks.batch, x.q.shape[2]

    def chunk_step(state, chunk):
        o, state = _apply_chunk(_head_major_terms(chunk, scale, x.steps), state)
        o = jnp.swapaxes(o, 1, 2)  # [B, C, H, V]
        return state, (o[0] if batch == 1 else o)

    num_chunks = chunks.arrays[0].shape[0]
    final, o = jax.lax.scan(chunk_step, x.state, chunks.arrays, unroll=min(_UNROLL, num_chunks))
    o = (o if batch == 1 else jnp.moveaxis(o, 0, 1)).reshape(batch, -1, heads, o.shape[-1])
    return o[:, : chunks.length], final


def _pallas(x: _Inputs, scale: float, chunk_size: int, block_sizes=None, interpret=None):
    """:func:`pallas_kernels.delta_rule.chunked_delta_rule` on the steps: queries on each token's last
    step, its decay on the first, padded to whole chunks of steps, head-major (no segments: the
    dispatcher refuses them)."""
    batch, length, heads = x.q.shape[:3]
    n = x.steps
    log_decay = None if x.log_decay is None else _on_step(x.log_decay, n, 0)
    steps = (_on_step(x.q, n, -1), x.k, x.v, x.beta, log_decay)
    head_major = lambda a: None if a is None else jnp.swapaxes(pad_time(a, chunk_size), 1, 2)  # noqa: E731
    block_sizes = ChunkedBlockSizes.tuned(block_sizes, "delta_rule", jnp.result_type(x.q, x.k, x.v), length=length * n,
                                          head_dim=x.k.shape[-1], value_dim=x.v.shape[-1], batch_heads=batch * heads,
                                          chunk_size=chunk_size)
    o, final = chunked_delta_rule(*map(head_major, steps), x.state, scale, chunk_size, block_sizes, interpret)
    o = jnp.swapaxes(o, 1, 2)[:, : length * n]
    return o.reshape(batch, length, n, heads, o.shape[-1])[:, :, -1], final


_IMPLEMENTATIONS = {"reference": _reference, "xla": _chunked, "pallas": _pallas}


# ----------------------------------------------------------------------------- public op


def validate_arguments(q, k, v, beta, g, scale, householder_steps, initial_state, segment_ids, chunk_size):
    name = "delta_rule"
    if not isinstance(householder_steps, int) or isinstance(householder_steps, bool) or householder_steps < 1:
        raise ValueError(f"{name}: `householder_steps` must be an int >= 1, got {householder_steps!r}")
    n = householder_steps
    for arg, a, layout in (("q", q, "B, T, H, K"), ("k", k, "B, T*n, H, K"), ("v", v, "B, T*n, H, V"),
                           ("beta", beta, "B, T*n, H")):
        require_rank(name, arg, a, layout)
        require_floating(name, arg, a)
    batch, length, heads, key_dim = q.shape
    require_nonempty(name, "q", length)
    steps = (batch, length * n, heads)
    per_step = f" (householder_steps={n} rows per token)" if n > 1 else ""
    if k.shape != (*steps, key_dim):
        raise ValueError(f"{name}: `k` must be [B, T*n, H, K] = {(*steps, key_dim)}{per_step}, got {k.shape}")
    if v.shape[:3] != steps:
        raise ValueError(f"{name}: `v` must be [B, T*n, H, V] with [B, T*n, H] = {steps}{per_step}, got {v.shape}")
    if beta.shape != steps:
        raise ValueError(f"{name}: `beta` must be [B, T*n, H] = {steps}{per_step}, got {beta.shape}")
    if g is not None:
        if g.shape != (batch, length, heads):
            raise ValueError(f"{name}: `g` must be [B, T, H] = {(batch, length, heads)} (one per token), got {g.shape}")
        require_floating(name, "g", g)
    state_shape = (batch, heads, key_dim, v.shape[-1])
    if initial_state is not None and initial_state.shape != state_shape:
        raise ValueError(f"{name}: `initial_state` must be [B, H, K, V] = {state_shape}, got {initial_state.shape}")
    require_segment_ids(name, segment_ids, (batch, length))
    require_positive_int(name, "chunk_size", chunk_size)
    require_scale(name, scale)


def _prepare(q, k, v, beta, g, scale, householder_steps, initial_state, segment_ids, chunk_size):
    """Validated :class:`_Inputs` and the resolved scale (shared by the op and its sharded form)."""
    validate_arguments(q, k, v, beta, g, scale, householder_steps, initial_state, segment_ids, chunk_size)
    batch, _, heads, key_dim = q.shape
    state = (jnp.zeros((batch, heads, key_dim, v.shape[-1]), jnp.float32) if initial_state is None
             else initial_state.astype(jnp.float32))
    log_decay = None if g is None else g.astype(jnp.float32)
    boundary = None if segment_ids is None else segment_starts(segment_ids)
    inputs = _Inputs(q, k, v, beta, log_decay, state, boundary, householder_steps)
    return inputs, (key_dim**-0.5 if scale is None else float(scale))


def delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    *,
    g: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    householder_steps: int = 1,
    initial_state: Optional[jax.Array] = None,
    output_final_state: bool = False,
    segment_ids: Optional[jax.Array] = None,
    chunk_size: int = 64,
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
):
    """The (gated) delta rule with ``n = householder_steps`` steps per token.

    Args:
      q: queries ``[B, T, H, K]``.
      k: keys ``[B, T*n, H, K]``, the ``n`` steps of token ``t`` at rows ``t*n .. t*n + n - 1``. Taken
        as given: the delta rule is a contraction only for ``||k|| = 1`` (normalise them, as
        :class:`jaxattn.nn.DeltaNet` does).
      v: values ``[B, T*n, H, V]``.
      beta: step sizes ``[B, T*n, H]``; in ``[0, 1]`` every transition eigenvalue is in ``[0, 1]``, in
        ``[0, 2]`` (unit keys) in ``[-1, 1]`` (negative eigenvalues, state tracking).
      g: per-token log decays ``[B, T, H]`` (natural log, ``<= 0``), applied once before the token's
        steps (Gated DeltaNet / Gated DeltaProduct).
      scale: default ``K ** -0.5``.
      householder_steps: ``n >= 1`` (1: DeltaNet; more: DeltaProduct).
      initial_state: ``[B, H, K, V]`` (kept in fp32).
      output_final_state: also return the final state.
      segment_ids: ``[B, T]`` ints; the state resets where the id changes.
      chunk_size: delta steps per chunk (the ``xla`` path takes ``chunk_size // n`` whole tokens, at
        least one, and on CPU runs fastest at 16, results/bench_cpu_delta_rule; the ``pallas`` kernels
        need a power of two >= 16 on GPU, a multiple of 8 on TPU).
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``ChunkedBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).
      impl: ``"reference"``, ``"xla"``, ``"pallas"`` or ``"auto"`` (pallas on GPU and TPU without
        ``segment_ids``, else xla).

    Returns:
      ``o [B, T, H, V]`` in ``v``'s dtype, and with ``output_final_state`` the final state
      ``[B, H, K, V]`` fp32 (``(o, state)``).

    Example::

        q, v = jnp.ones((2, 64, 4, 16)), jnp.ones((2, 64, 4, 16))  # [B, T, H, K], [B, T, H, V]
        k = jnp.full((2, 64, 4, 16), 0.25)  # unit keys (||k|| = 1)
        o = delta_rule(q, k, v, jnp.full((2, 64, 4), 0.5))  # beta [B, T, H]; o [2, 64, 4, 16]
    """
    inputs, scale = _prepare(q, k, v, beta, g, scale, householder_steps, initial_state, segment_ids, chunk_size)
    unsupported = None if segment_ids is None else "segment_ids"
    core = resolve_impl("delta_rule", impl, _IMPLEMENTATIONS, pallas_unsupported=unsupported,
                        pallas_options=dict(block_sizes=block_sizes, interpret=interpret))
    o, final = core(inputs, scale, chunk_size)
    o = o.astype(v.dtype)
    return (o, final) if output_final_state else o

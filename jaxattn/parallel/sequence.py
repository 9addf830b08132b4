"""LASP-2 and LASP-2H: linear recurrences and softmax attention sharded over the ``sequence`` mesh axis.

docs/sequence_parallel.md#lasp-2. Each device holds a contiguous shard ``i`` of the sequence and runs the
recurrence on it from a zero state, which gives its local outputs and its local final state
``M_i``, together with the shard's transition ``A_i`` (the product of its decays). ONE all-gather
of the packed ``(M_i, A_i)`` of every shard (its size does not depend on T) lets each device
combine the states of the shards before it,

    incoming_i = sum_{j < i} (prod_{j < l < i} A_l) M_j,

which is the diagonal recurrence ``h_j = A_j h_{j-1} + M_j`` over shards, and add what that state
contributes to its tokens. The backward pass is the mirror image: one all-gather of the
cotangents of the incoming states and the transposed (suffix) combine, ``d M_j = sum_{i > j}
(prod_{j < l < i} A_l) d incoming_i``.

* :func:`sequence_parallel_linear_attention`: ``M_i`` is the ``[H, K, V]`` state of
  :func:`jaxattn.ops.linear_attention` and ``A_i = exp(sum of the shard's log decays)``; the
  incoming state reaches token ``t`` as ``scale (q_t .* exp(G_t)) incoming``, ``G_t`` the shard's
  inclusive cumulative log decay. Local attention runs through the op, so the XLA and the Pallas
  paths both work.
* :func:`sequence_parallel_delta_rule`: the transitions are matrices. A shard's state from ``S_in``
  is ``A_i S_in + M_i`` with ``A_i [H, K, K]`` the product of its steps ``exp(g) (I - beta k^T k)``.
  One run of :func:`jaxattn.ops.delta_rule` on the values ``[v, 0]`` from the state ``[0, I]`` gives
  both: final state ``[M_i, A_i]``, and outputs ``[o_local, scale q_t A_{<=t}]``, the second of
  which carries the incoming state to token ``t``. The combine is ``h_j = A_j h_{j-1} + M_j`` with
  matrix products; the gather holds ``B H K (V + K)`` numbers per shard.
* :func:`sequence_parallel_diagonal_scan`: ``M_i`` is the last local state of
  :func:`jaxattn.ops.diagonal_scan` and ``A_i = prod_t a_t``; the incoming state reaches ``h_t``
  through the cumulative product of the transitions.

* :func:`sequence_parallel_softmax_attention`, the softmax layers of LASP-2H
  (docs/sequence_parallel.md#lasp-2h-softmax-attention-layers): softmax attention has no state of
  fixed size, so each device gathers the whole ``K`` and ``V``
  instead, in ONE all-gather of the two packed together (plus one of the segment ids with packed
  sequences), and attends its own queries to them, masked by global position: shard ``i``'s query
  ``t`` sits at key position ``i T / n + t``. The backward pass is the transpose: a reduce-scatter
  of ``dK`` and ``dV``.

All run inside :func:`jax.shard_map` over the mesh in context (``jax.set_mesh``) or the one
passed: the batch over the mesh's batch axes, the sequence over ``sequence``, heads (or the first
feature axis of a scan) over ``tensor`` when it divides. They return no final state: a sharded
call is for training and prefill-free evaluation; decoding runs on one shard.
"""

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from jaxattn.ops import delta_rule, diagonal_scan, linear_attention, softmax_attention
from jaxattn.ops.checks import require_rank, require_scale, require_segment_ids
from jaxattn.ops.segments import segment_index, segment_starts
from jaxattn.ops.delta_rule import validate_arguments as validate_delta_rule_arguments
from jaxattn.ops.linear_attention_parts import combined_log_decay, normalized, with_normalizer_column
from jaxattn.parallel.mesh import BATCH_AXES, SEQUENCE_AXIS, TENSOR_AXIS
from jaxattn.parallel.shard_states import incoming_state


def current_mesh():
    """The mesh in context (``jax.set_mesh``), or None when there is none."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def sequence_axis_size(mesh=None) -> int:
    """Number of sequence shards of ``mesh`` (default: the mesh in context); 1 without one."""
    mesh = current_mesh() if mesh is None else mesh
    if mesh is None or SEQUENCE_AXIS not in mesh.axis_names:
        return 1
    return mesh.shape[SEQUENCE_AXIS]


# ----------------------------------------------------------------------------- shard_map plumbing


def _mesh_or_current(mesh):
    mesh = current_mesh() if mesh is None else mesh
    if mesh is None or SEQUENCE_AXIS not in mesh.axis_names:
        raise ValueError(
            f"sequence parallelism needs a mesh with a {SEQUENCE_AXIS!r} axis: pass `mesh` or call inside "
            "`jax.set_mesh(mesh)`"
        )
    return mesh


def _batch_axes(mesh, batch: int, name: str):
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    shards = math.prod(mesh.shape[axis] for axis in axes)
    if batch % shards:
        raise ValueError(f"{name}: batch {batch} is not divisible by the {shards} shards of mesh axes {axes}")
    return axes or None


def _check_length(length: int, mesh, name: str) -> None:
    shards = mesh.shape[SEQUENCE_AXIS]
    if length % shards:
        raise ValueError(
            f"{name}: sequence length {length} is not divisible by the {shards} shards of the "
            f"{SEQUENCE_AXIS!r} mesh axis"
        )


def _divides(mesh, axis: str, size: int) -> Optional[str]:
    """``axis`` when ``mesh`` has it and it divides ``size``, else None (replicated)."""
    return axis if axis in mesh.axis_names and size % mesh.shape[axis] == 0 else None


def _time_spec(x: jax.Array, batch: int, length: int, batch_axes, feature_axis) -> PartitionSpec:
    """Spec of a ``[B, T, F, ...]`` operand whose B and T axes may be broadcast (size 1)."""
    rest = [None] * (x.ndim - 2)
    if rest and feature_axis is not None:
        rest[0] = feature_axis
    return PartitionSpec(batch_axes if x.shape[0] == batch else None, SEQUENCE_AXIS if x.shape[1] == length else None,
                         *rest)


def _head_major_specs(mesh, batch: int, heads: int, name: str):
    """Specs of the ``[B, T, H, D]`` tokens, the ``[B, T, H]`` gates and the ``[B, T]`` segment ids of an
    attention-like op: batch over the batch axes, time over ``sequence``, heads over ``tensor``
    when it divides them."""
    batch_axes = _batch_axes(mesh, batch, name)
    head_axis = _divides(mesh, TENSOR_AXIS, heads)
    tokens = PartitionSpec(batch_axes, SEQUENCE_AXIS, head_axis, None)
    gates = PartitionSpec(batch_axes, SEQUENCE_AXIS, head_axis)
    return tokens, gates, PartitionSpec(batch_axes, SEQUENCE_AXIS)


def _require_attention_shapes(name: str, q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    """q, k ``[B, T, H, K]`` and v ``[B, T, H, V]`` of one batch, length and heads, or ``ValueError``."""
    for arg, a in (("q", q), ("k", k), ("v", v)):
        require_rank(name, arg, a, "B, T, H, D")
    if k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{name}: q, k [B, T, H, K] and v [B, T, H, V] must agree, got {q.shape}, {k.shape}, {v.shape}")


def _shard_map(fn: Callable, mesh, in_specs, out_specs):
    # check_vma=False: the Pallas kernels cannot declare how their outputs vary over mesh axes.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def _continues_previous_shard(segment_ids: jax.Array, mesh) -> jax.Array:
    """``[B]``: whether this shard's first token continues the previous shard's last segment (inside
    ``shard_map``; the first shard has no predecessor: False)."""
    shards = mesh.shape[SEQUENCE_AXIS]
    previous_last = jax.lax.ppermute(segment_ids[:, -1], SEQUENCE_AXIS, [(i, i + 1) for i in range(shards - 1)])
    return segment_ids[:, 0] == previous_last


# ----------------------------------------------------------------------------- linear attention


def sequence_parallel_linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    g: Optional[jax.Array] = None,
    g_gamma: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    causal: bool = True,
    normalize: bool = False,
    eps: float = 1e-6,
    segment_ids: Optional[jax.Array] = None,
    chunk_size: int = 64,
    dot_general: Optional[Callable] = None,
    impl: str = "auto",
    mesh=None,
) -> jax.Array:
    """:func:`jaxattn.ops.linear_attention` with the sequence split over the ``sequence`` mesh axis.

    Same arguments and output ``o [B, T, H, V]`` (no initial or final state). T must divide by the
    number of sequence shards; ``segment_ids`` need ``causal=True``.
    """
    name = "sequence_parallel_linear_attention"
    mesh = _mesh_or_current(mesh)
    _require_attention_shapes(name, q, k, v)
    batch, length, heads, key_dim = q.shape
    if segment_ids is not None and not causal:
        raise ValueError(f"{name}: segment_ids need causal=True")
    if not causal and (g is not None or g_gamma is not None):
        raise ValueError(f"{name}: gates `g` / `g_gamma` need causal=True (a decay has a direction)")
    _check_length(length, mesh, name)
    scale = key_dim**-0.5 if scale is None else float(scale)
    log_decay = combined_log_decay(g, g_gamma, (batch, length, heads))
    einsum = functools.partial(jnp.einsum, _dot_general=dot_general or jax.lax.dot_general)

    def shard(q, k, v, log_decay, segment_ids):
        # The normaliser is one more value column: its state travels with the rest.
        values = with_normalizer_column(v) if normalize else v
        o, state = linear_attention(
            q, k, values, g=log_decay, scale=scale, causal=causal, output_final_state=True, segment_ids=segment_ids,
            chunk_size=chunk_size, dot_general=dot_general, impl=impl,
        )
        # [B, T, H]: how much of the incoming state token t sees; [B, H]: how much crosses the shard.
        query_weight = jnp.ones(q.shape[:3], jnp.float32)
        transition = jnp.ones((q.shape[0], q.shape[2]), jnp.float32)
        if log_decay is not None:
            query_weight = jnp.exp(jnp.cumsum(log_decay, axis=1))
            transition = query_weight[:, -1]
        if segment_ids is not None:
            # The incoming state reaches the tokens before the shard's first segment start, and only if
            # the shard's first token continues the previous shard's last segment; it crosses the shard
            # only if, besides, no segment starts in it.
            starts = segment_starts(segment_ids)
            continues = _continues_previous_shard(segment_ids, mesh)  # [B]
            before_start = segment_index(starts, axis=1) == 0  # [B, T]
            query_weight = query_weight * (before_start & continues[:, None])[..., None]
            transition = transition * (continues & before_start[:, -1])[:, None]
        transition = transition[..., None, None]  # [B, H, 1, 1]
        direction = "forward" if causal else "both"
        incoming = incoming_state(state, transition, direction)
        o = o + scale * einsum("bthk,bhkv->bthv", q * query_weight[..., None].astype(q.dtype), incoming,
                               preferred_element_type=jnp.float32)
        if normalize:
            o = normalized(o, eps)
        return o.astype(v.dtype)

    token_spec, gate_spec, id_spec = _head_major_specs(mesh, batch, heads, name)
    run = _shard_map(
        shard, mesh,
        in_specs=(token_spec, token_spec, token_spec, None if log_decay is None else gate_spec,
                  None if segment_ids is None else id_spec),
        out_specs=token_spec,
    )
    return run(q, k, v, log_decay, segment_ids)


# ----------------------------------------------------------------------------- delta rule


def sequence_parallel_delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    *,
    g: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    householder_steps: int = 1,
    segment_ids: Optional[jax.Array] = None,
    chunk_size: int = 64,
    impl: str = "auto",
    mesh=None,
) -> jax.Array:
    """:func:`jaxattn.ops.delta_rule` with the sequence split over the ``sequence`` mesh axis.

    Same arguments and output ``o [B, T, H, V]`` (no initial or final state); T must divide by the
    number of sequence shards (the ``n`` rows of a token stay on its shard). The local work costs
    ``K`` more value columns than the op alone (the shard's transition travels as values).
    """
    name = "sequence_parallel_delta_rule"
    mesh = _mesh_or_current(mesh)
    validate_delta_rule_arguments(q, k, v, beta, g, scale, householder_steps, None, segment_ids, chunk_size)
    batch, length, heads, key_dim = q.shape
    value_dim = v.shape[-1]
    _check_length(length, mesh, name)
    scale = key_dim**-0.5 if scale is None else float(scale)

    def shard(q, k, v, beta, g, segment_ids):
        # Values [v, 0] from the state [0, I]: the final state is [M_i, A_i], the outputs
        # [o_local, scale q_t A_{<=t}].
        values = jnp.concatenate([v.astype(jnp.float32), jnp.zeros((*v.shape[:3], key_dim), jnp.float32)], -1)
        start = jnp.concatenate([jnp.zeros((key_dim, value_dim)), jnp.eye(key_dim)], axis=-1)
        start = jnp.broadcast_to(start, (q.shape[0], q.shape[2], key_dim, value_dim + key_dim))
        o, final = delta_rule(q, k, values, beta, g=g, scale=scale, householder_steps=householder_steps,
                              initial_state=start, output_final_state=True, segment_ids=segment_ids,
                              chunk_size=chunk_size, impl=impl)
        local, reach = o[..., :value_dim], o[..., value_dim:]  # [B, T, H, V], [B, T, H, K]
        transition = final[..., value_dim:]
        if segment_ids is not None:  # a segment starting at the shard's first token cuts the chain here
            continues = _continues_previous_shard(segment_ids, mesh)[:, None, None, None]
            transition = transition * continues
        incoming = incoming_state(final[..., :value_dim], transition, "matrix")
        if segment_ids is not None:
            incoming = incoming * continues
        o = local + jnp.einsum("bthk,bhkv->bthv", reach, incoming, precision=jax.lax.Precision.HIGHEST)
        return o.astype(v.dtype)

    token_spec, gate_spec, id_spec = _head_major_specs(mesh, batch, heads, name)
    run = _shard_map(
        shard, mesh,
        in_specs=(token_spec, token_spec, token_spec, gate_spec, None if g is None else gate_spec,
                  None if segment_ids is None else id_spec),
        out_specs=token_spec,
    )
    return run(q, k, v, beta, g, segment_ids)


# ----------------------------------------------------------------------------- softmax attention (LASP-2H)


def sequence_parallel_softmax_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: Optional[float] = None,
    causal: bool = True,
    segment_ids: Optional[jax.Array] = None,
    dot_general: Optional[Callable] = None,
    impl: str = "auto",
    mesh=None,
) -> jax.Array:
    """:func:`jaxattn.ops.softmax_attention` with the sequence split over the ``sequence`` mesh axis.

    Same arguments (no ``kv_lengths``) and output ``o [B, T, H, Dv]``; T must divide by the number
    of sequence shards. Each shard keeps its ``T / n`` queries and all-gathers the keys and values
    once (``[B, T, H, D + Dv]`` per device), so the Pallas kernels, which take no ``query_offset``,
    are not used: ``impl="auto"`` runs XLA and ``impl="pallas"`` is refused by the op.
    """
    name = "sequence_parallel_softmax_attention"
    mesh = _mesh_or_current(mesh)
    _require_attention_shapes(name, q, k, v)
    batch, length, heads, key_dim = q.shape
    require_segment_ids(name, segment_ids, (batch, length))
    require_scale(name, scale)
    _check_length(length, mesh, name)
    dtype = jnp.result_type(k, v)

    def shard(q, k, v, segment_ids):
        gather = functools.partial(jax.lax.all_gather, axis_name=SEQUENCE_AXIS, axis=1, tiled=True)
        # K and V travel in one collective; its transpose (the backward) is one reduce-scatter.
        keys_values = gather(jnp.concatenate([k.astype(dtype), v.astype(dtype)], axis=-1))
        kv_segment_ids = None if segment_ids is None else gather(segment_ids)
        query_offset = jax.lax.axis_index(SEQUENCE_AXIS) * q.shape[1]  # this shard's first global position
        o = softmax_attention(
            q, keys_values[..., :key_dim], keys_values[..., key_dim:], scale=scale, causal=causal,
            segment_ids=segment_ids, kv_segment_ids=kv_segment_ids, query_offset=query_offset,
            dot_general=dot_general, impl=impl,
        )
        return o.astype(v.dtype)

    token_spec, _, id_spec = _head_major_specs(mesh, batch, heads, name)
    id_spec = None if segment_ids is None else id_spec
    run = _shard_map(shard, mesh, in_specs=(token_spec, token_spec, token_spec, id_spec), out_specs=token_spec)
    return run(q, k, v, segment_ids)


# ----------------------------------------------------------------------------- diagonal scan


def sequence_parallel_diagonal_scan(
    a: jax.Array, b: jax.Array, *, reverse: bool = False, impl: str = "auto", mesh=None
) -> jax.Array:
    """All states of ``h_t = a_t h_{t-1} + b_t`` (:func:`jaxattn.ops.diagonal_scan`, zero ``h0``)
    with the sequence split over the ``sequence`` mesh axis; ``a`` may broadcast over B and T.

    Returns:
      ``h [B, T, ...]`` (no final state).
    """
    name = "sequence_parallel_diagonal_scan"
    mesh = _mesh_or_current(mesh)
    a, b = jnp.asarray(a), jnp.asarray(b)
    for arg, x in (("a", a), ("b", b)):
        require_rank(name, arg, x, "B, T, D, ...")
    if a.ndim != b.ndim:
        raise ValueError(f"{name}: `a` and `b` must be [B, T, D, ...] of the same rank, got {a.shape} and {b.shape}")
    batch, length = b.shape[:2]
    _check_length(length, mesh, name)
    dtype = jnp.result_type(a, b)
    a, b = a.astype(dtype), b.astype(dtype)

    def shard(a, b):
        local, last = diagonal_scan(a, b, reverse=reverse, impl=impl)
        a_full = jnp.broadcast_to(a, (a.shape[0], b.shape[1], *a.shape[2:]))
        reach = jax.lax.cumprod(a_full, axis=1, reverse=reverse)  # prod of a from the shard's edge to t
        across = reach[:, 0] if reverse else reach[:, -1]  # the whole shard's transition
        incoming = incoming_state(last, across, "reverse" if reverse else "forward")
        return local + reach * incoming[:, None]

    batch_axes = _batch_axes(mesh, batch, name)
    feature_axis = _divides(mesh, TENSOR_AXIS, b.shape[2])
    if a.shape[2] != b.shape[2]:
        feature_axis = None
    b_spec = _time_spec(b, batch, length, batch_axes, feature_axis)
    run = _shard_map(shard, mesh, in_specs=(_time_spec(a, batch, length, batch_axes, feature_axis), b_spec),
                     out_specs=b_spec)
    return run(a, b)


# ----------------------------------------------------------------------------- layers' entry point


def scan_states(a: jax.Array, b: jax.Array, *, reverse: bool = False, impl: str = "auto") -> jax.Array:
    """Every state of :func:`jaxattn.ops.diagonal_scan` from a zero start, sequence parallel when the
    mesh in context has more than one ``sequence`` shard (what S5 and S4D call)."""
    if sequence_axis_size() > 1:
        return sequence_parallel_diagonal_scan(a, b, reverse=reverse, impl=impl)
    return diagonal_scan(a, b, reverse=reverse, impl=impl)[0]

"""The combine step of LASP-2: the state entering each sequence shard from the others.

docs/sequence_parallel.md#lasp-2. Every shard ``i`` contributes its final state from a zero start,
``M_i``, and its transition ``A_i``; the state entering shard ``i`` is the diagonal (or, for the
delta rule, matrix) recurrence over shards ``h_j = A_j h_{j-1} + M_j`` evaluated before ``i``. One
all-gather of the packed ``(M_i, A_i)`` forward, one all-gather of the cotangents backward
(:func:`incoming_state`, a ``custom_vjp``). Used by :mod:`jaxattn.parallel.sequence`.
"""

import functools
import math

import jax
import jax.numpy as jnp

from jaxattn.ops import diagonal_scan
from jaxattn.parallel.mesh import SEQUENCE_AXIS


def _exclusive_prefixes(transitions: jax.Array, states: jax.Array, reverse: bool) -> jax.Array:
    """``[P, B, ...]``: for each shard, the state entering it from the shards before it (after it
    when ``reverse``), by the diagonal recurrence over shards ``h_j = A_j h_{j-1} + M_j``."""
    inclusive, _ = diagonal_scan(transitions[None], states[None], reverse=reverse, impl="xla")
    zero = jnp.zeros_like(states[:1])
    if reverse:
        return jnp.concatenate([inclusive[0, 1:], zero], axis=0)
    return jnp.concatenate([zero, inclusive[0, :-1]], axis=0)


def _matrix_prefixes(transitions: jax.Array, states: jax.Array) -> jax.Array:
    """``[P, B, H, K, V]``: the state entering each shard, ``h_j = A_j h_{j-1} + M_j`` with matrix
    transitions ``A_j [B, H, K, K]`` acting on the key side (P is small: a loop over shards)."""
    entering, h = [], jnp.zeros_like(states[0])
    for a_j, m_j in zip(transitions, states):
        entering.append(h)
        h = jnp.einsum("bhkl,bhlv->bhkv", a_j, h, precision=jax.lax.Precision.HIGHEST) + m_j
    return jnp.stack(entering)


def _incoming_all(states: jax.Array, transitions: jax.Array, direction: str) -> jax.Array:
    """Incoming state of every shard ``[P, B, ...]`` from the gathered ``states`` and ``transitions``."""
    if direction == "matrix":
        return _matrix_prefixes(transitions, states)
    if direction == "both":  # every other shard, no decay (non-causal attention)
        return _exclusive_prefixes(transitions, states, False) + _exclusive_prefixes(transitions, states, True)
    return _exclusive_prefixes(transitions, states, direction == "reverse")


def _pack(states: jax.Array, transitions: jax.Array) -> jax.Array:
    """One ``[B, n]`` array of a shard's state and transition (one collective for both)."""
    batch = states.shape[0]
    transitions = jnp.broadcast_to(transitions, (batch, *transitions.shape[1:])).astype(states.dtype)
    return jnp.concatenate([states.reshape(batch, -1), transitions.reshape(batch, -1)], axis=1)


def _unpack(packed: jax.Array, state_shape, transition_shape):
    """Inverse of :func:`_pack` on gathered ``[P, B, n]``."""
    shards, batch = packed.shape[:2]
    size = packed.shape[2] - math.prod(transition_shape[1:])
    states = packed[..., :size].reshape(shards, batch, *state_shape[1:])
    transitions = packed[..., size:].reshape(shards, batch, *transition_shape[1:])
    return states, transitions


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def incoming_state(states: jax.Array, transitions: jax.Array, direction: str) -> jax.Array:
    """The state entering this shard from the others (inside ``shard_map`` over ``sequence``).

    Args:
      states: this shard's final state from a zero start, ``M_i [B, ...]``.
      transitions: its transition ``A_i`` ``[B or 1, ...]``, broadcastable to ``states``.
      direction: ``"forward"`` (shards before this one), ``"reverse"`` (after), ``"both"``
        (all others, transitions ignored) or ``"matrix"`` (shards before this one, ``transitions``
        ``[B, H, K, K]`` matrices applied to the key axis of ``states [B, H, K, V]``).

    One all-gather forward; one all-gather of the cotangents and the transposed combine backward.
    """
    return _incoming_forward(states, transitions, direction)[0]


def _gathered(states, transitions):
    packed = jax.lax.all_gather(_pack(states, transitions), SEQUENCE_AXIS)
    return _unpack(packed, states.shape, (states.shape[0], *transitions.shape[1:]))


def _incoming_forward(states, transitions, direction):
    all_states, all_transitions = _gathered(states, transitions)
    if direction == "both":
        all_transitions = jnp.ones_like(all_transitions)
    me = jax.lax.axis_index(SEQUENCE_AXIS)
    return _incoming_all(all_states, all_transitions, direction)[me], (all_states, all_transitions, transitions)


def _incoming_backward(direction, residuals, cotangent):
    all_states, all_transitions, transitions = residuals
    all_cotangents = jax.lax.all_gather(cotangent, SEQUENCE_AXIS)
    _, transpose = jax.vjp(lambda s, a: _incoming_all(s, a, direction), all_states, all_transitions)
    d_states, d_transitions = transpose(all_cotangents)
    me = jax.lax.axis_index(SEQUENCE_AXIS)
    d_transitions = d_transitions[me]
    if direction == "both":
        d_transitions = jnp.zeros_like(d_transitions)
    # Undo the broadcast of the transition over the batch and cast back to its dtype.
    broadcast_axes = tuple(a for a, n in enumerate(transitions.shape) if n == 1 and d_transitions.shape[a] != 1)
    d_transitions = jnp.sum(d_transitions, axis=broadcast_axes, keepdims=True)
    if not jnp.iscomplexobj(transitions):
        d_transitions = d_transitions.real
    return d_states[me], d_transitions.astype(transitions.dtype)


incoming_state.defvjp(_incoming_forward, _incoming_backward)

"""Mixture-of-Memories (MoM, Du et al. 2025): M routed memories per head and an always-on shared one.

``[B, L, d_model] -> [B, L, d_model]``. A router scores the memories per token,
``p_t = softmax(x_t W_r) [M]``, and keeps the top k, with weights renormalised over them,
``r_t^m = p_t^m / sum_{chosen} p_t^n`` (0 for the others). Each memory ``m`` has its own key, value,
step-size and gate projections and one recurrence of the existing ops (``memory``):

* ``"gated_delta_rule"`` (the paper's best): ``S_t^m = a_t^m (I - beta_t^m k^T k) S_{t-1}^m +
  beta_t^m k^T v`` (:func:`jaxattn.ops.delta_rule`, DeltaNet's projections and Mamba-2 decay);
* ``"gated_linear_attention"``: ``S_t^m = a_t^m S_{t-1}^m + k^T v`` with GLA's data gate
  (:func:`jaxattn.ops.linear_attention`, identity features).

A memory the router does not choose at token t is left exactly as it was: its gate is ``a = 1``
(``g = 0``) and its write is zero (``beta = 0``, or ``k = 0`` for linear attention), so every memory
is one call of the op on masked inputs; all memories run as extra heads of a single call. The
shared memory is never masked. With the one query ``q_t`` (L2-normalised for the delta rule), the
output reads the routed mixture of the memories plus the shared one,

    o_t = sum_m r_t^m q_t S_t^m + q_t S_t^shared,

then RMS norm (delta rule) or LayerNorm (linear attention) per head, the optional output gate and
the output projection, as in :class:`jaxattn.nn.DeltaNet` and :class:`jaxattn.nn.LinearAttention`.
Compute and state grow with ``M + 1`` heads per head (the masked layout; a grouped layout that
sorts tokens by memory would compute only the k chosen).

Load balance: ``__call__`` sows the Switch-Transformer loss ``M sum_m f_m P_m`` (``f_m`` the fraction
of the token's k choices that went to m, ``P_m`` the mean router probability; 1 when balanced)
into the collection :data:`jaxattn.nn.registry.AUX_LOSS_COLLECTION`; the train step adds it to the loss
with ``config.train.aux_loss_weight``.
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.blocks import dense
from jaxattn.nn.delta_net import (
    delta_rule_betas, delta_rule_inputs, mamba2_log_decay, normalized_output, run_delta_rule,
)
from jaxattn.nn.linear_attention import data_gate, run_linear_attention
from jaxattn.nn.projections import output_projection, qkv_projections
from jaxattn.nn.registry import AUX_LOSS_COLLECTION, SequenceMixer, register_mixer
from jaxattn.nn.short_conv import zero_conv_history

MEMORIES = ("gated_delta_rule", "gated_linear_attention")


class MixtureOfMemoriesCarry(NamedTuple):
    """Decoding state: every memory's ``state [B, (M + shared) H, K, V]`` fp32, memory-major (the
    shared memory last), and the short convolution's last inputs."""

    state: jax.Array
    conv_history: jax.Array


def top_k_routing(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Router logits ``[..., M]`` -> ``(weights, chosen, probabilities)``, each ``[..., M]`` fp32:
    ``p = softmax(logits)``, ``chosen`` 1 on the k largest ``p``, ``weights = p chosen / sum(p chosen)``."""
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    _, index = jax.lax.top_k(probabilities, k)
    chosen = jnp.sum(jax.nn.one_hot(index, logits.shape[-1], dtype=jnp.float32), axis=-2)
    kept = probabilities * chosen
    return kept / jnp.sum(kept, axis=-1, keepdims=True), chosen, probabilities


def load_balancing_loss(chosen: jax.Array, probabilities: jax.Array, k: int) -> jax.Array:
    """Switch Transformer's ``M sum_m f_m P_m`` over every token of ``chosen, probabilities [..., M]``:
    ``f_m`` the share of the ``k`` choices per token that picked m, ``P_m`` the mean probability of m.
    Equals 1 when the routing is uniform; its gradient reaches the router through ``P``."""
    memories = chosen.shape[-1]
    fraction = jnp.mean(chosen.reshape(-1, memories), axis=0) / k
    mean_probability = jnp.mean(probabilities.reshape(-1, memories), axis=0)
    return memories * jnp.sum(fraction * mean_probability)


@register_mixer("mom")
class MixtureOfMemories(SequenceMixer):
    """Mixture-of-Memories mixer ``[B, L, d_model] -> [B, L, d_model]`` with the mixer face
    (``__call__``, ``init_carry``, ``step`` on ``x_t [B, d_model]``); always causal.

    Attributes:
      num_heads, head_dim: H heads with queries and keys of size K = ``head_dim``.
      value_dim: V per head (default ``head_dim``).
      num_memories: M routed memories per head.
      top_k: memories each token updates and reads (1 <= k <= M). With k = 1 the renormalised weight
        is always 1, so the task loss does not reach the router: it learns from the balance loss alone.
      shared_memory: one more memory that every token updates and reads with weight 1.
      memory: each memory's recurrence, one of :data:`MEMORIES`.
      negative_eigenvalues: transitions with eigenvalues in ``[-1, 1]`` (``beta in [0, 2]`` for the
        delta rule, ``a = 2 sigmoid^(1/tau) - 1`` for linear attention).
      gate_temperature: tau of the linear-attention memories' gate (GLA: 16).
      short_conv: width of the causal depthwise convolution on the q, k, v projections (0: none).
      output_gate: ``silu(x W)`` on the normalised output.
      chunk_size, impl: passed to the op.

    Under a mesh with ``sequence`` shards a whole-sequence call runs the op's LASP-2, as
    :class:`jaxattn.nn.DeltaNet` and :class:`jaxattn.nn.LinearAttention` do.

    ``VARIANTS``: ``linear_attention`` (GLA memories, one per token), ``negative`` (eigenvalues in
    [-1, 1], routed memories only).

    Example::

        layer = MixtureOfMemories(num_heads=2, head_dim=16, num_memories=4, top_k=2)
        x = jnp.ones((2, 64, 32))                                   # [B, L, d_model]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 32]
    """

    VARIANTS = {
        "linear_attention": dict(memory="gated_linear_attention", top_k=1),
        "negative": dict(negative_eigenvalues=True, shared_memory=False),
    }

    num_heads: int = 4
    head_dim: int = 32
    value_dim: Optional[int] = None
    num_memories: int = 4
    top_k: int = 2
    shared_memory: bool = True
    memory: str = "gated_delta_rule"
    negative_eigenvalues: bool = False
    gate_temperature: float = 16.0
    short_conv: int = 4
    output_gate: bool = True
    chunk_size: int = 64
    impl: str = "auto"

    def noncausal_options(self) -> dict:
        return {}

    @property
    def values(self) -> int:
        """V, the value size per head."""
        return self.head_dim if self.value_dim is None else self.value_dim

    @property
    def memory_count(self) -> int:
        """Memories per head, the shared one included."""
        return self.num_memories + int(self.shared_memory)

    def _channels(self) -> tuple[int, int, int]:
        """Widths of the q projection (one query) and of the k, v projections (one per memory)."""
        heads, count = self.num_heads, self.memory_count
        return heads * self.head_dim, count * heads * self.head_dim, count * heads * self.values

    def _check_options(self):
        if self.memory not in MEMORIES:
            raise ValueError(f"MixtureOfMemories: memory={self.memory!r} is not one of {MEMORIES}")
        if not isinstance(self.num_memories, int) or self.num_memories < 1:
            raise ValueError(f"MixtureOfMemories: num_memories must be an int >= 1, got {self.num_memories!r}")
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= self.num_memories:
            raise ValueError(f"MixtureOfMemories: top_k must be an int in [1, num_memories = {self.num_memories}], "
                             f"got {self.top_k!r}")
        if self.short_conv < 0:
            raise ValueError(f"MixtureOfMemories: short_conv must be >= 0 (0: none), got {self.short_conv}")

    def _route(self, x: jax.Array, sow: bool) -> tuple[jax.Array, jax.Array]:
        """``(weights, chosen)`` ``[B, L, M + shared]``: the routed memories' weights and choices, and
        for the shared memory weight 1 and always chosen. Sows the balance loss when ``sow``."""
        weights, chosen, probabilities = top_k_routing(dense(self.num_memories, ("embed", None), "router")(x),
                                                       self.top_k)
        if sow:
            self.sow(AUX_LOSS_COLLECTION, "load_balance", load_balancing_loss(chosen, probabilities, self.top_k))
        if self.shared_memory:
            always = jnp.ones_like(weights[..., :1])
            weights, chosen = (jnp.concatenate([a, always], axis=-1) for a in (weights, chosen))
        return weights, chosen

    @nn.compact
    def _mix(self, x, *, segment_ids=None, carry: Optional[MixtureOfMemoriesCarry] = None, impl=None):
        """``x [B, L, d_model]`` -> (``[B, L, d_model]``, carry after the last token)."""
        self._check_options()
        batch, length = x.shape[:2]
        heads, count = self.num_heads, self.memory_count
        # init returns parameters only: a sown loss there would be appended to by a later apply
        weights, chosen = self._route(x, sow=carry is None and not self.is_initializing())
        # [B, L, count H]: memory-major like the heads of k and v
        chosen_heads = jnp.repeat(chosen, heads, axis=-1)
        (q, k, v), history = qkv_projections(x, self._channels(), short_conv=self.short_conv, segment_ids=segment_ids,
                                             conv_history=None if carry is None else carry.conv_history)
        options = dict(segment_ids=segment_ids, chunk_size=self.chunk_size, impl=impl or self.impl,
                       state=None if carry is None else carry.state)
        delta_rule = self.memory == "gated_delta_rule"
        if delta_rule:
            q, k, v = delta_rule_inputs(q, k, v, head_dim=self.head_dim, short_conv=self.short_conv)
        else:
            q, k = (a.reshape(batch, length, -1, self.head_dim) for a in (q, k))
        # Every memory reads with the one query; its keys and values are its own heads.
        queries, values = jnp.tile(q, (1, 1, count, 1)), v.reshape(batch, length, count * heads, -1)
        if delta_rule:
            beta = delta_rule_betas(x, count * heads, self.negative_eigenvalues) * chosen_heads
            g = mamba2_log_decay(self, x, count * heads) * chosen_heads
            o, state = run_delta_rule(queries, k, values, beta, g=g, **options)
        else:
            g, negative = data_gate(x, count * heads, self.gate_temperature, self.negative_eigenvalues)
            if negative is not None:
                negative = negative & (chosen_heads > 0)
            o, state = run_linear_attention(queries, k * chosen_heads[..., None].astype(k.dtype), values,
                                            g=g * chosen_heads, negative=negative, **options)
        o = jnp.einsum("blm,blmhv->blhv", weights.astype(o.dtype), o.reshape(batch, length, count, heads, -1))
        if delta_rule:
            return normalized_output(o, x, output_gate=self.output_gate), MixtureOfMemoriesCarry(state, history)
        o = nn.LayerNorm(name="output_norm", use_bias=False)(o)
        y = output_projection(o, x.shape[-1], gate_input=x if self.output_gate else None)
        return y, MixtureOfMemoriesCarry(state, history)

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        del train
        self.check_sequence(x, segment_ids, width="d_model")
        return self._mix(x, segment_ids=segment_ids)[0]

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> MixtureOfMemoriesCarry:
        """Zero states ``[B, (M + shared) H, K, V]`` fp32 and zero convolution history."""
        del features  # the state's size comes from the heads
        return MixtureOfMemoriesCarry(
            jnp.zeros((batch_size, self.memory_count * self.num_heads, self.head_dim, self.values), jnp.float32),
            zero_conv_history(batch_size, self.short_conv, sum(self._channels())),
        )

    def step(self, carry: MixtureOfMemoriesCarry, x_t: jax.Array) -> tuple[MixtureOfMemoriesCarry, jax.Array]:
        """One token ``x_t [B, d_model]``: every memory's recurrence with ``carry`` as its state (the
        ones not chosen keep theirs exactly)."""
        y, carry = self._mix(x_t[:, None], carry=carry, impl="reference")
        return carry, y[:, 0]

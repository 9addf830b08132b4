"""Multi-head linear attention layer: projections, feature map, gate, the op, output norm and gate.

docs/linear_attention.md. ``[B, L, d_model] -> [B, L, d_model]``; per head
``o_t = phi(q_t) S_t`` with ``S_t = exp(g_t) S_{t-1} + phi(k_t)^T v_t`` (see
:func:`jaxattn.ops.linear_attention`), where the gate is none, a constant per-head decay
(RetNet: ``gamma_h = 1 - 2^(-5-h)``) or a data-dependent ``g_t = log sigmoid(W x_t) / tau`` (GLA).
With ``negative_eigenvalues`` the data-dependent transition is ``a_t = 2 exp(g_t) - 1`` in
``(-1, 1)`` (Grazzi et al., ICLR 2025): :func:`signed_data_gate`.
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.arithmetic import attention_dot_general
from jaxattn.nn.blocks import dense
from jaxattn.nn.projections import multi_head_qkv, output_projection
from jaxattn.nn.registry import SequenceMixer, register_mixer
from jaxattn.nn.short_conv import zero_conv_history
from jaxattn.ops import feature_maps, linear_attention
from jaxattn.ops.linear_attention_parts import fold_transition_signs
from jaxattn.parallel.sequence import sequence_axis_size, sequence_parallel_linear_attention

class LinearAttentionCarry(NamedTuple):
    """Decoding state: ``state [B, H, K', V(+1)]`` fp32, the short convolution's last inputs, and
    the number of tokens seen (the next rotary position)."""

    state: jax.Array
    conv_history: jax.Array
    position: jax.Array


FEATURE_MAP_NAMES = (*feature_maps.FEATURE_MAPS, "performer", "hedgehog")
GATES = ("none", "decay", "data")
# The smallest |a_t| of a signed gate: at a_t = 0, log |a_t| and its derivative are infinite.
MIN_SIGNED_TRANSITION = 1e-6


def signed_data_gate(z: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """``(log |a|, a < 0)`` of ``a = 2 sigmoid(z)^(1/tau) - 1`` in ``(-1, 1)``: the GLA gate
    ``p = sigmoid(z)^(1/tau)`` mapped from ``(0, 1)`` onto ``(-1, 1)`` as Grazzi et al. (2025)
    extend Mamba's and DeltaNet's transitions (``tau = 1``: ``a = tanh(z / 2)``).

    With ``l = log sigmoid(z) / tau`` and ``a = 1 + 2 expm1(l)``: ``a < 0`` exactly where
    ``2 expm1(l) < -1``; ``log |a| = log1p(2 expm1(l))`` for ``a > 0`` (accurate as ``a -> 1``, the
    long memories) and ``log1p(-2 exp(l))`` for ``a < 0`` (accurate as ``a -> -1``), each with its
    argument clamped so that ``|a| >= MIN_SIGNED_TRANSITION`` (finite values and gradients in both
    branches of the select, also the one not taken).
    """
    log_gate = jax.nn.log_sigmoid(z.astype(jnp.float32)) / temperature
    below_one = 2.0 * jnp.expm1(log_gate)  # a - 1
    negative = below_one < -1.0
    positive_log = jnp.log1p(jnp.maximum(below_one, MIN_SIGNED_TRANSITION - 1.0))
    negative_log = jnp.log1p(-2.0 * jnp.minimum(jnp.exp(log_gate), (1.0 - MIN_SIGNED_TRANSITION) / 2))
    return jnp.where(negative, negative_log, positive_log), negative


def data_gate(x: jax.Array, count: int, temperature: float, negative_eigenvalues: bool):
    """GLA's data-dependent gate from the dense ``gate`` (called inside a module's compact method):
    ``(g [B, L, count], None)`` with ``g = log sigmoid(x W) / tau``, or with ``negative_eigenvalues``
    ``(log |a|, a < 0)`` of the signed transition (:func:`signed_data_gate`)."""
    z = dense(count, ("embed", "heads"), "gate")(x)
    if negative_eigenvalues:
        return signed_data_gate(z, temperature)
    return jax.nn.log_sigmoid(z) / temperature, None


def run_linear_attention(q, k, v, *, negative: Optional[jax.Array], state: Optional[jax.Array], **options):
    """:func:`jaxattn.ops.linear_attention` from ``state`` (None: zeros) with transition signs
    ``negative`` (None: none), returning ``(o, final state)``. A whole sequence (``state`` None)
    under a mesh with ``sequence`` shards runs LASP-2
    (:func:`jaxattn.parallel.sequence.sequence_parallel_linear_attention`, no state returned),
    except non-causal with ``segment_ids``, which XLA's partitioner handles by gathering the
    sequence. LASP-2 takes no signs: it runs on the sign-folded q and k
    (:func:`jaxattn.ops.linear_attention_parts.fold_transition_signs`, exact)."""
    if state is None and sequence_axis_size() > 1 and (options.get("causal", True) or options.get("segment_ids") is None):
        if negative is not None:
            q, k, _ = fold_transition_signs(q, k, negative)
        return sequence_parallel_linear_attention(q, k, v, **options), None
    return linear_attention(q, k, v, g_negative=negative, initial_state=state, output_final_state=True, **options)


def retnet_log_decay(num_heads: int) -> jax.Array:
    """``log(1 - 2^(-5 - h))`` for h = 0..H-1: memories from 32 to 2^(4+H) tokens."""
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(num_heads, dtype=jnp.float32))))


class HedgehogFeatureMap(nn.Module):
    """Trainable Hedgehog map ``softmax([x W_h, -x W_h])`` per head, ``W_h [D, D]`` initialised to I."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., H, D] -> [..., H, 2D]``."""
        heads, dim = x.shape[-2:]
        init = lambda key, shape: jnp.broadcast_to(jnp.eye(dim), shape)  # noqa: E731
        weight = self.param("weight", nn.with_logical_partitioning(init, ("heads", None, None)), (heads, dim, dim))
        return feature_maps.hedgehog_softmax(jnp.einsum("...hd,hde->...he", x, weight))


@register_mixer("linear_attention")
class LinearAttention(SequenceMixer):
    """Linear attention mixer ``[B, L, d_model] -> [B, L, d_model]`` with the mixer face (``__call__``,
    ``init_carry``, ``step`` on ``x_t [B, d_model]``).

    Attributes:
      num_heads, head_dim: H heads of size D for queries, keys and values.
      feature_map: one of :data:`FEATURE_MAP_NAMES`.
      gate: ``"none"``, ``"decay"`` (RetNet constant per head) or ``"data"`` (GLA-style per token).
      gate_temperature: tau of the data-dependent gate (GLA uses 16: gates start near 1).
      negative_eigenvalues: with ``gate="data"``, transitions ``a_t = 2 sigmoid(W x_t)^(1/tau) - 1``
        in ``(-1, 1)`` instead of ``sigmoid(W x_t)^(1/tau)`` in ``(0, 1)`` (Grazzi et al., ICLR
        2025: a negative ``a_t`` flips the state, so one layer can track parity). Passed to the op
        as ``g = log |a_t|`` and ``g_negative = a_t < 0`` (:func:`signed_data_gate`, with
        ``|a_t| >= 1e-6``). Not with ``normalize`` (the normaliser could cross zero).
      normalize: divide by ``phi(q_t) . z_t``, ``z_t`` the (gated) sum of ``phi(k_s)``; off by
        default, as in :func:`jaxattn.ops.linear_attention`. It needs ``phi(q) . phi(k) > 0``: every
        map but ``identity`` (refused) gives that; with signed features the denominator crosses zero.
      output_norm: LayerNorm of each head's output (RetNet's group norm).
      output_gate: multiply by ``silu(W x)`` before the output projection.
      causal: causal (decodable) or bidirectional attention within each segment.
      rotary: rotary positions on q and k before the feature map (as Hedgehog does when it converts
        a RoPE Transformer: the maps then see exactly the teacher's queries and keys).
      short_conv: width W of a causal depthwise convolution (then SiLU) on the q, k, v projections
        (0: none); it gives the layer local order, which plain linear attention lacks.
      num_random_features, random_seed: Performer's projection ``[D, M]`` (fixed, not trained).
      chunk_size, impl: passed to :func:`jaxattn.ops.linear_attention`.

    Under a mesh with ``sequence`` shards (``jax.set_mesh``) a whole-sequence call runs LASP-2
    (:func:`run_linear_attention`).

    ``VARIANTS``: ``gated`` (GLA: data gate and short convolution), ``decay`` (RetNet's decay with
    rotary positions), ``hedgehog`` and ``based`` (Taylor features), both normalised,
    ``normalized_gated_output`` (normaliser, output norm and output gate), ``bidirectional`` and
    ``gated_negative`` (``gated`` with ``negative_eigenvalues``).

    Example::

        layer = LinearAttention(num_heads=2, head_dim=16, gate="data", short_conv=4)  # GLA-style
        x = jnp.ones((2, 64, 32))                                   # [B, L, d_model]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 32]
    """

    VARIANTS = {
        "gated": dict(gate="data", short_conv=4),
        "decay": dict(gate="decay", rotary=True),
        "hedgehog": dict(feature_map="hedgehog", normalize=True),
        "based": dict(feature_map="taylor_exp", head_dim=8, normalize=True),
        "normalized_gated_output": dict(normalize=True, output_norm=True, output_gate=True),
        "bidirectional": dict(causal=False),
        "gated_negative": dict(gate="data", short_conv=4, negative_eigenvalues=True),
    }

    num_heads: int = 4
    head_dim: int = 32
    feature_map: str = "elu_plus_one"
    gate: str = "none"
    gate_temperature: float = 16.0
    negative_eigenvalues: bool = False
    normalize: bool = False
    output_norm: bool = False
    output_gate: bool = False
    causal: bool = True
    rotary: bool = False
    short_conv: int = 0
    num_random_features: int = 64
    random_seed: int = 0
    chunk_size: int = 64
    impl: str = "auto"

    def _check_options(self):
        if self.feature_map not in FEATURE_MAP_NAMES:
            raise ValueError(f"LinearAttention: feature_map={self.feature_map!r} is not one of {FEATURE_MAP_NAMES}")
        if self.gate not in GATES:
            raise ValueError(f"LinearAttention: gate={self.gate!r} is not one of {GATES}")
        if self.gate != "none" and not self.causal:
            raise ValueError("LinearAttention: a gate needs causal=True")
        if self.negative_eigenvalues and self.gate != "data":
            raise ValueError(f"LinearAttention: negative_eigenvalues=True needs gate='data', got gate={self.gate!r}")
        if self.negative_eigenvalues and self.normalize:
            raise ValueError("LinearAttention: negative_eigenvalues=True cannot be normalised (normalize=True): with "
                             "signed transitions the normaliser can cross zero")
        if self.normalize and self.feature_map in feature_maps.SIGNED_FEATURE_MAPS:
            raise ValueError(f"LinearAttention: normalize=True needs positive features; feature_map="
                             f"{self.feature_map!r} is signed, so the normaliser can cross zero")

    @property
    def feature_dim(self) -> int:
        """Size of ``phi(q)``: the key dimension of the state."""
        d = self.head_dim
        return {"taylor_exp": 1 + d + d * d, "performer": self.num_random_features, "hedgehog": 2 * d}.get(
            self.feature_map, d
        )

    def _features(self, x: jax.Array, is_query: bool) -> jax.Array:
        if self.feature_map == "hedgehog":
            return HedgehogFeatureMap(name="query_map" if is_query else "key_map")(x)
        if self.feature_map == "performer":
            projection = jax.random.normal(jax.random.key(self.random_seed), (self.head_dim, self.num_random_features))
            scaled = x * self.head_dim**-0.25  # phi(q).phi(k) ~ exp(q.k / sqrt(D))
            # Per-query stabiliser only: a per-key one would not cancel in a running (causal) sum.
            return feature_maps.performer_positive(scaled, projection, stabilize_axes=(-1,) if is_query else ())
        return feature_maps.FEATURE_MAPS[self.feature_map](x)

    @nn.compact
    def _attend(self, x, *, segment_ids=None, carry: Optional[LinearAttentionCarry] = None, impl=None):
        """``x [B, L, d_model]`` -> (``[B, L, d_model]``, carry after the last token)."""
        self._check_options()
        batch, length, features = x.shape
        heads, dim = self.num_heads, self.head_dim
        start = jnp.zeros((batch,), jnp.int32) if carry is None else carry.position  # tokens before x
        (q, k, v), history = multi_head_qkv(
            x, heads, dim, short_conv=self.short_conv,
            rotary_positions=start[:, None] + jnp.arange(length)[None, :] if self.rotary else None,
            conv_history=None if carry is None else carry.conv_history, segment_ids=segment_ids,
        )
        phi_q, phi_k = self._features(q, True), self._features(k, False)
        g = g_gamma = negative = None
        if self.gate == "decay":
            g_gamma = retnet_log_decay(heads)
        elif self.gate == "data":
            g, negative = data_gate(x, heads, self.gate_temperature, self.negative_eigenvalues)
        # Feature-mapped keys are not unit-scale dot products: no extra scale (it cancels when normalised).
        scale = None if self.feature_map == "identity" else 1.0
        dot_general = attention_dot_general()
        impl = impl or self.impl  # with a custom dot_general the op picks an impl that takes it
        options = dict(g=g, g_gamma=g_gamma, scale=scale, causal=self.causal, normalize=self.normalize,
                       segment_ids=segment_ids, chunk_size=self.chunk_size, dot_general=dot_general, impl=impl)
        o, state = run_linear_attention(phi_q, phi_k, v, negative=negative,
                                        state=None if carry is None else carry.state, **options)
        if self.output_norm:
            o = nn.LayerNorm(name="output_norm", use_bias=False)(o)
        y = output_projection(o, features, gate_input=x if self.output_gate else None)
        return y, LinearAttentionCarry(state, history, start + length)

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        del train
        self.check_sequence(x, segment_ids, width="d_model")
        return self._attend(x, segment_ids=segment_ids)[0]

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> LinearAttentionCarry:
        """Zero state ``[B, H, K', V]`` fp32 (``V + 1`` with ``normalize``) and convolution history."""
        del features  # the state's size comes from the heads
        value_dim = self.head_dim + (1 if self.normalize else 0)
        channels = 3 * self.num_heads * self.head_dim
        return LinearAttentionCarry(
            jnp.zeros((batch_size, self.num_heads, self.feature_dim, value_dim), jnp.float32),
            zero_conv_history(batch_size, self.short_conv, channels),
            jnp.zeros((batch_size,), jnp.int32),
        )

    def step(self, carry: LinearAttentionCarry, x_t: jax.Array) -> tuple[LinearAttentionCarry, jax.Array]:
        """One token ``x_t [B, d_model]``: the recurrence with ``carry`` as the state."""
        self.require_causal("LinearAttention.step")
        y, carry = self._attend(x_t[:, None], carry=carry, impl="reference")
        return carry, y[:, 0]



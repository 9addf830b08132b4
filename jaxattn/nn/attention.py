"""Multi-head softmax attention layer, the baseline mixer, with a KV cache for decoding.

See docs/softmax_attention.md#the-layer.
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.arithmetic import attention_dot_general
from jaxattn.nn.projections import multi_head_qkv, output_projection
from jaxattn.nn.registry import SequenceMixer, nan_past_capacity, register_mixer
from jaxattn.nn.short_conv import zero_conv_history
from jaxattn.ops import softmax_attention
from jaxattn.parallel.sequence import sequence_axis_size, sequence_parallel_softmax_attention


class KVCache(NamedTuple):
    """``keys``, ``values`` ``[B, max_length, H, D]``; ``length`` ``[B]`` tokens written so far;
    ``conv_history [B, W-1, 3 H D]`` the short convolution's last inputs (``W = 0``: empty)."""

    keys: jax.Array
    values: jax.Array
    length: jax.Array
    conv_history: jax.Array


@register_mixer("softmax_attention")
class MultiHeadAttention(SequenceMixer):
    """``[B, L, d_model] -> [B, L, d_model]`` softmax attention with the mixer face.

    Registered as ``"softmax_attention"``, not under its class name: among the attention mixers the
    kind of attention is what tells them apart (every one has several heads), and configs and
    results name it so.

    Attributes:
      num_heads, head_dim: H heads of size D.
      causal: causal (decodable) or bidirectional within each segment.
      rotary: rotary position embedding of queries and keys (attention is otherwise blind to order).
      short_conv: width W of a causal depthwise convolution (then SiLU) on the q, k, v projections
        (0: none), the same as :class:`jaxattn.nn.LinearAttention`'s, for like-for-like comparisons.
      max_decode_length: size of the KV cache that ``init_carry`` allocates: ``step`` decodes that
        many tokens exactly and returns NaN after them (no sliding window).
      impl: passed to :func:`jaxattn.ops.softmax_attention`.

    ``VARIANTS``: ``short_conv`` (width 4, as the recall experiments use), ``no_rotary`` and
    ``bidirectional``.

    Under a mesh with ``sequence`` shards (``jax.set_mesh``) a whole-sequence call runs LASP-2H's
    softmax attention (:func:`jaxattn.parallel.sequence.sequence_parallel_softmax_attention`): each
    shard keeps its queries and gathers K and V once, masked by global position. The projections,
    the short convolution and the rotary positions (of the whole sequence) come before, so they
    are those of one device.

    Example::

        layer = MultiHeadAttention(num_heads=2, head_dim=16, max_decode_length=128)
        x = jnp.ones((2, 64, 32))                                   # [B, L, d_model]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 32]
    """

    VARIANTS = {"short_conv": dict(short_conv=4), "no_rotary": dict(rotary=False), "bidirectional": dict(causal=False)}

    num_heads: int = 4
    head_dim: int = 32
    causal: bool = True
    rotary: bool = True
    short_conv: int = 0
    max_decode_length: int = 1024
    impl: str = "auto"

    @nn.compact
    def _attend(self, x, positions, attend, *, segment_ids=None, conv_history=None):
        """Projections around ``attend(q, k, v) -> (o, extra)``; ``x [B, L, d_model]``, ``positions [B, L]``.

        Returns ``(y [B, L, d_model], extra, conv_history)``.
        """
        (q, k, v), history = multi_head_qkv(
            x, self.num_heads, self.head_dim, short_conv=self.short_conv, conv_history=conv_history,
            rotary_positions=positions if self.rotary else None, segment_ids=segment_ids,
        )
        o, extra = attend(q, k, v)
        return output_projection(o, x.shape[-1]), extra, history

    @property
    def decode_capacity(self) -> int:
        return self.max_decode_length

    def _product_options(self) -> dict:
        """``impl`` and ``dot_general`` for the op (which decides how they combine: jaxattn.ops.dispatch)."""
        return dict(impl=self.impl, dot_general=attention_dot_general())

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        del train
        self.check_sequence(x, segment_ids, width="d_model")

        # One all-gather of K and V per layer over the mesh's sequence shards (LASP-2H), rather than
        # whatever XLA's partitioner would move.
        parallel = sequence_axis_size() > 1
        attention = sequence_parallel_softmax_attention if parallel else softmax_attention

        def attend(q, k, v):
            return attention(q, k, v, causal=self.causal, segment_ids=segment_ids, **self._product_options()), None

        positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
        return self._attend(x, positions, attend, segment_ids=segment_ids)[0]

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> KVCache:
        del features  # the cache's size comes from the heads
        shape = (batch_size, self.max_decode_length, self.num_heads, self.head_dim)
        history = zero_conv_history(batch_size, self.short_conv, 3 * self.num_heads * self.head_dim)
        zeros = jnp.zeros(shape, jnp.float32)
        return KVCache(zeros, zeros, jnp.zeros((batch_size,), jnp.int32), history)

    def step(self, carry: KVCache, x_t: jax.Array) -> tuple[KVCache, jax.Array]:
        """Appends this token's key and value to the cache and attends over the filled part; once
        the cache is full (``max_decode_length`` tokens), returns NaN."""
        self.require_causal("MultiHeadAttention.step")

        def attend(q, k, v):
            write = jax.vmap(lambda cache, new, at: jax.lax.dynamic_update_slice_in_dim(cache, new, at, axis=0))
            cache = KVCache(
                write(carry.keys, k.astype(carry.keys.dtype), carry.length),
                write(carry.values, v.astype(carry.values.dtype), carry.length),
                carry.length + 1,
                carry.conv_history,
            )
            # Past a full cache the output is NaN below; the op still gets a valid length.
            filled = jnp.minimum(cache.length, self.max_decode_length)
            o = softmax_attention(q, cache.keys, cache.values, causal=False, kv_lengths=filled,
                                  **self._product_options())
            return nan_past_capacity(o, carry.length, self.max_decode_length), cache

        history = carry.conv_history if self.short_conv else None
        y, cache, history = self._attend(x_t[:, None], carry.length[:, None], attend, conv_history=history)
        return cache._replace(conv_history=history), y[:, 0]

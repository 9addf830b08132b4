"""Multi-head 2-simplicial (tensor) attention layer, with a windowed cache for decoding.

docs/tensor_attention.md. ``[B, L, d_model] -> [B, L, d_model]``: per head, a query attends to pairs of
tokens ``(j, k)`` with weights ``softmax_{(j, k)}(scale <q_i, k1_j .* k2_k>)`` and reads
``v1_j .* v2_k`` (:func:`jaxattn.ops.tensor_attention`). With ``bias`` the second key and value are
shifted, ``k2 + 1/D`` and ``v2 + 1``, so that zero ``k2``, ``v2`` projections make the layer
ordinary softmax attention over ``j`` (the 2-simplicial reference's parameterisation).
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.blocks import dense
from jaxattn.nn.registry import SequenceMixer, nan_past_capacity, register_mixer
from jaxattn.ops import tensor_attention
from jaxattn.ops.tensor_attention import attend_pairs


class PairCache(NamedTuple):
    """Decoding state: ring buffers of the last ``w1`` first keys / values ``k1, v1 [B, w1, H, D]``
    and the last ``w2`` second ones ``k2, v2 [B, w2, H, D]``, and ``length [B]``, tokens seen."""

    k1: jax.Array
    v1: jax.Array
    k2: jax.Array
    v2: jax.Array
    length: jax.Array


@register_mixer("tensor_attention")
class TensorAttention(SequenceMixer):
    """2-simplicial attention ``[B, L, d_model] -> [B, L, d_model]`` with the mixer face (``__call__``,
    ``init_carry``, ``step`` on ``x_t [B, d_model]``).

    Attributes:
      num_heads, head_dim: H heads of size D (q, k1, k2, v1, v2 all ``[B, L, H, D]``).
      causal: pairs ``j, k <= i`` only (decodable; the default, as for the other attention
        mixers), or every pair of the segment (``causal=False``, for bidirectional classifiers).
      window: ``(w1, w2)``, the causal 2-D sliding window ``i - w1 < j <= i``, ``i - w2 < k <= i``
        (implies ``causal``); the decoding cache then holds ``w1`` and ``w2`` tokens.
      shared_k2v2: one ``k2``, ``v2`` projection of size D shared by all heads.
      bias: the ``k2 + 1/D``, ``v2 + 1`` variant (see the module docstring).
      max_decode_length: the cache size without a window: ``step`` decodes that many tokens exactly
        and returns NaN after them (a ``window`` decodes without end).
      impl: passed to :func:`jaxattn.ops.tensor_attention`.

    ``VARIANTS``: ``window`` (a 4 x 3 sliding window), ``shared_bias`` (one shared ``k2``, ``v2``
    with the bias parameterisation) and ``bidirectional``.

    Example::

        layer = TensorAttention(num_heads=2, head_dim=16, window=(8, 4))
        x = jnp.ones((2, 32, 32))                                   # [B, L, d_model]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 32, 32]
    """

    VARIANTS = {"window": dict(window=(4, 3)), "shared_bias": dict(shared_k2v2=True, bias=True),
                "bidirectional": dict(causal=False)}

    num_heads: int = 2
    head_dim: int = 32
    causal: bool = True
    window: Optional[tuple[int, int]] = None
    shared_k2v2: bool = False
    bias: bool = False
    max_decode_length: int = 1024
    impl: str = "auto"

    def noncausal_options(self) -> dict:
        return {} if self.causal or self.window is not None else {"causal": False}

    @property
    def decode_capacity(self) -> Optional[int]:
        return self.max_decode_length if self.window is None else None

    def _cache_sizes(self) -> tuple[int, int]:
        if self.window is None:
            return self.max_decode_length, self.max_decode_length
        return int(self.window[0]), int(self.window[1])

    @nn.compact
    def _project(self, x: jax.Array):
        """``x [B, L, d_model]`` -> q, k1, k2, v1, v2 ``[B, L, H, D]`` and the output projection."""
        batch, length, features = x.shape
        width = self.num_heads * self.head_dim
        heads_of = lambda a: a.reshape(batch, length, -1, self.head_dim)  # noqa: E731
        q, k1, v1 = (heads_of(dense(width, ("embed", "heads"), name)(x)) for name in ("query", "key1", "value1"))
        second_width, second_axes = (self.head_dim, ("embed", None)) if self.shared_k2v2 else (width, ("embed", "heads"))
        k2, v2 = (heads_of(dense(second_width, second_axes, name)(x)) for name in ("key2", "value2"))
        if self.bias:
            k2, v2 = k2 + 1.0 / self.head_dim, v2 + 1.0
        shape = (batch, length, self.num_heads, self.head_dim)
        k2, v2 = jnp.broadcast_to(k2, shape), jnp.broadcast_to(v2, shape)
        output = dense(features, ("heads", "embed"), "out")
        return (q, k1, k2, v1, v2), lambda o: output(o.reshape(batch, length, width))

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        del train
        self.check_sequence(x, segment_ids, width="d_model")
        (q, k1, k2, v1, v2), output = self._project(x)
        o = tensor_attention(q, k1, k2, v1, v2, causal=self.is_causal, window=self.window, segment_ids=segment_ids,
                             impl=self.impl)
        return output(o)

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> PairCache:
        del features  # the cache's size comes from the heads and the window
        size1, size2 = self._cache_sizes()
        buffer = lambda size: jnp.zeros((batch_size, size, self.num_heads, self.head_dim), jnp.float32)  # noqa: E731
        return PairCache(buffer(size1), buffer(size1), buffer(size2), buffer(size2), jnp.zeros((batch_size,), jnp.int32))

    def step(self, carry: PairCache, x_t: jax.Array) -> tuple[PairCache, jax.Array]:
        """Writes this token's keys and values over the oldest cache slots and attends over the
        filled slots: the pairs of the last ``w1`` x ``w2`` tokens (order does not matter to a
        softmax over pairs, so the ring needs no rotation). Without a window, NaN once the cache
        is full (``max_decode_length`` tokens)."""
        self.require_causal("TensorAttention.step")
        (q, k1, k2, v1, v2), output = self._project(x_t[:, None])

        def write(cache, new):
            slot = carry.length % cache.shape[1]
            put = lambda c, n, at: jax.lax.dynamic_update_slice_in_dim(c, n, at, axis=0)  # noqa: E731
            return jax.vmap(put)(cache, new.astype(cache.dtype), slot)

        cache = PairCache(write(carry.k1, k1), write(carry.v1, v1), write(carry.k2, k2), write(carry.v2, v2),
                          carry.length + 1)
        filled = lambda size: jnp.arange(size)[None, :] < cache.length[:, None]  # noqa: E731  [B, w]
        keep = filled(cache.k1.shape[1])[:, None, :, None] & filled(cache.k2.shape[1])[:, None, None, :]
        o = attend_pairs(q, cache.k1, cache.k2, cache.v1, cache.v2, keep[:, None], self.head_dim**-0.5)
        if self.decode_capacity is not None:
            o = nan_past_capacity(o, carry.length, self.decode_capacity)
        return cache, output(o.astype(x_t.dtype))[:, 0]

"""Sequence classifier: encoder, a stack of residual mixer blocks, pooling, linear decoder.

With ``pooling="none"`` it labels every position instead (``[B, L, num_classes]`` logits), a
bidirectional token classifier for per-position tasks whose labels depend on the whole sequence.

``inputs`` are token ids ``[B, L]`` (embedded) or real features ``[B, L, F]`` (linearly
encoded); ``lengths [B]`` mark the real, unpadded steps. Padding is given its own segment, so
no mixer (bidirectional ones included) carries information from padding into real steps.

See docs/architecture.md#blocks-and-models.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.blocks import POOLINGS, MixerBlock, dense, make_norm
from jaxattn.nn.registry import layer_mixers, make_mixer


class SequenceClassifier(nn.Module):
    """``[B, L]`` tokens or ``[B, L, F]`` features -> class logits ``[B, num_classes]`` (``[B, L, num_classes]``
    without pooling).

    Attributes:
      num_classes: output classes.
      d_model: H, the width of every block.
      num_layers: number of residual mixer blocks.
      mixer: registered mixer name (see :mod:`jaxattn.nn.registry`), e.g. ``"s5"``.
      mixer_options: keyword arguments of the mixer (e.g. ``state_size``, ``causal``).
      mixer_pattern: a hybrid stack instead: ``(mixer name, options)`` pairs repeated over the layers
        (:func:`jaxattn.nn.registry.layer_mixers`); None: every layer is ``mixer``.
      vocab_size: embed token ids when set; otherwise inputs are real features.
      norm, prenorm, activation, dropout: see :class:`jaxattn.nn.blocks.MixerBlock`.
      pooling: ``"mean"`` (over real steps), ``"last"`` (the last real step) or ``"none"`` (per-position
        logits ``[B, L, num_classes]``).

    Example::

        model = SequenceClassifier(num_classes=10, d_model=32, num_layers=2, mixer="s5",
                                   mixer_options={"state_size": 16, "causal": False}, vocab_size=20)
        tokens = jnp.zeros((4, 64), jnp.int32)                      # [B, L]
        variables = model.init(jax.random.key(0), tokens)
        logits = model.apply(variables, tokens, jnp.array([64, 50, 10, 1]))  # [4, 10]
    """

    num_classes: int
    d_model: int = 128
    num_layers: int = 4
    mixer: str = "s5"
    mixer_options: Any = None
    mixer_pattern: Any = None
    vocab_size: Optional[int] = None
    norm: str = "layer"
    prenorm: bool = True
    activation: str = "half_glu1"
    dropout: float = 0.0
    pooling: str = "mean"

    @nn.compact
    def __call__(self, inputs: jax.Array, lengths: Optional[jax.Array] = None, *, train: bool = False) -> jax.Array:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not one of {sorted(POOLINGS)}")
        if self.vocab_size is not None:
            if inputs.ndim != 2:
                raise ValueError(f"SequenceClassifier: token inputs must be [B, L], got {inputs.shape}")
            embedding_init = nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed"))
            x = nn.Embed(self.vocab_size, self.d_model, embedding_init=embedding_init, name="encoder")(inputs)
        else:
            if inputs.ndim != 3:
                raise ValueError(f"SequenceClassifier: feature inputs must be [B, L, F], got {inputs.shape}")
            x = dense(self.d_model, ("features", "embed"), "encoder")(inputs)
        batch, length = x.shape[:2]
        if lengths is None:
            lengths = jnp.full((batch,), length, jnp.int32)
        segment_ids = (jnp.arange(length)[None, :] < lengths[:, None]).astype(jnp.int32)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        for i, (name, options) in enumerate(layer_mixers(self.mixer, self.mixer_options, self.mixer_pattern,
                                                         self.num_layers)):
            # Unbound (parent=None): the block adopts it as its child "mixer".
            mixer = make_mixer(name, options, parent=None)
            block = MixerBlock(
                mixer, norm=self.norm, prenorm=self.prenorm, activation=self.activation,
                dropout=self.dropout, name=f"blocks_{i}",
            )
            x = block(x, segment_ids=segment_ids, train=train)
        if self.prenorm:
            x = make_norm(self.norm, train, name="final_norm")(x)
        pooled = POOLINGS[self.pooling](x, lengths)
        return dense(self.num_classes, ("embed", "classes"), "decoder")(pooled)

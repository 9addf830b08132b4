"""Causal language model around any decodable mixer, with greedy and sampled generation.

``tokens [B, L] -> logits [B, L, vocab]``: token embedding, residual mixer blocks, final
LayerNorm, tied output embedding. ``step`` runs one token through every block's ``step`` (the
mixers' recurrent state or KV cache), so generation costs O(1) per token for recurrent mixers.

See docs/architecture.md#blocks-and-models.
"""

from functools import partial
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxattn.nn.blocks import MixerBlock, make_norm
from jaxattn.nn.registry import SequenceMixer, layer_mixers, make_mixer


class LanguageModel(nn.Module):
    """Decoder-only LM: ``tokens [B, L]`` -> next-token logits ``[B, L, vocab_size]``; ``step``:
    ``token_t [B]`` -> ``(carry, logits [B, vocab_size])`` from :meth:`init_carry`.

    Attributes as :class:`jaxattn.models.SequenceClassifier` (``mixer_pattern``: a hybrid stack); every
    layer's mixer must be causal as configured (:meth:`jaxattn.nn.SequenceMixer.require_causal`: a mixer
    whose options let it see later tokens is refused, naming them) and the norm is LayerNorm
    (BatchNorm statistics over time would leak the future). ``step`` runs each layer's own ``step``
    (recurrent states and KV caches side by side in a hybrid stack).

    Example::

        model = LanguageModel(vocab_size=100, d_model=32, mixer="linear_attention")
        tokens = jnp.zeros((2, 16), jnp.int32)                      # [B, L]
        variables = model.init(jax.random.key(0), tokens)
        logits = model.apply(variables, tokens)                     # [2, 16, 100]
        more = generate(model, variables, tokens[:, :4], max_new_tokens=8)  # [2, 12]
    """

    vocab_size: int
    d_model: int = 128
    num_layers: int = 2
    mixer: str = "linear_attention"
    mixer_options: Any = None
    mixer_pattern: Any = None
    prenorm: bool = True
    activation: str = "half_glu1"
    dropout: float = 0.0

    def layer_mixers(self) -> list[tuple[str, dict]]:
        """``(mixer name, options)`` of every layer (:func:`jaxattn.nn.registry.layer_mixers`)."""
        return layer_mixers(self.mixer, self.mixer_options, self.mixer_pattern, self.num_layers)

    def build_mixer(self, layer: int = 0) -> SequenceMixer:
        """An unbound, causal mixer of layer ``layer`` (a block adopts it; unbound it says what it is
        and allocates carries without parameters)."""
        name, options = self.layer_mixers()[layer]
        mixer = make_mixer(name, options, parent=None)
        mixer.require_causal(f"LanguageModel (layer {layer}, mixer {name!r})")
        return mixer

    @property
    def decode_capacity(self) -> Optional[int]:
        """Tokens ``step`` (and :func:`generate`) handles exactly: the smallest ``decode_capacity`` of
        the layers' mixers (None: every one decodes any number)."""
        capacities = [self.build_mixer(i).decode_capacity for i in range(self.num_layers)]
        known = [capacity for capacity in capacities if capacity is not None]
        return min(known) if known else None

    def make_block(self, layer: int, **module_kwargs) -> MixerBlock:
        """The residual block of layer ``layer`` around a fresh causal mixer (LayerNorm: see the class
        docstring)."""
        return MixerBlock(self.build_mixer(layer), norm="layer", prenorm=self.prenorm, activation=self.activation,
                          dropout=self.dropout, **module_kwargs)

    def setup(self):
        self.embed = nn.Embed(
            self.vocab_size, self.d_model,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(self.d_model**-0.5), ("vocab", "embed")),
        )
        self.blocks = [self.make_block(i) for i in range(self.num_layers)]
        self.final_norm = make_norm("layer", train=False)

    def __call__(
        self, tokens: jax.Array, lengths: Optional[jax.Array] = None, *, segment_ids: Optional[jax.Array] = None,
        train: bool = False,
    ) -> jax.Array:
        """``tokens [B, L]`` int -> next-token logits ``[B, L, vocab]``.

        ``lengths`` is accepted for the classifier's interface and unused: in a causal model right
        padding never reaches a real position.
        """
        del lengths
        if tokens.ndim != 2:
            raise ValueError(f"LanguageModel: tokens must be [B, L], got shape {tokens.shape}")
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, segment_ids=segment_ids, train=train)
        return self.embed.attend(self.final_norm(x))

    def init_carry(self, batch_size: int) -> tuple:
        """Every block's :meth:`MixerBlock.init_carry` (needs no parameters, so works on an unbound model)."""
        # Unbound blocks: templates that only allocate carries.
        return tuple(self.make_block(i, parent=None).init_carry(batch_size, self.d_model) for i in range(self.num_layers))

    def step(self, carry: tuple, token_t: jax.Array) -> tuple[tuple, jax.Array]:
        """``token_t [B]`` -> (carry, logits ``[B, vocab]``); equals ``__call__`` position by position
        for the first :attr:`decode_capacity` tokens, NaN after them."""
        x = self.embed(token_t)
        new_carry = []
        for block, block_carry in zip(self.blocks, carry):
            block_carry, x = block.step(block_carry, x)
            new_carry.append(block_carry)
        return tuple(new_carry), self.embed.attend(self.final_norm(x))


def generate(
    model: LanguageModel,
    variables,
    prompt: jax.Array,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    rng: Optional[jax.Array] = None,
) -> jax.Array:
    """Continues ``prompt [B, P]`` by ``max_new_tokens``: greedy at ``temperature == 0``, else sampled
    from ``softmax(logits / temperature)``. Returns ``[B, P + max_new_tokens]``.

    Raises ``ValueError`` before tracing when ``P + max_new_tokens`` exceeds the model's
    :attr:`LanguageModel.decode_capacity` (a full cache would decode wrongly).
    """
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"generate: the prompt must be [B, P] with P >= 1, got shape {prompt.shape}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    capacity, total = model.decode_capacity, prompt.shape[1] + max_new_tokens
    if capacity is not None and total > capacity:
        raise ValueError(
            f"generate: the prompt ({prompt.shape[1]} tokens) and max_new_tokens ({max_new_tokens}) make {total} "
            f"tokens, more than the {capacity} that the model's mixers decode with these options (their "
            f"decode_capacity: raise its cache size, e.g. max_decode_length, or shorten the request)"
        )
    # A hashable model (FrozenDict options) can be a static argument: one compilation per model.
    pattern = None if not model.mixer_pattern else tuple(
        (name, FrozenDict(options or {})) for name, options in model.mixer_pattern)
    model = model.clone(mixer_options=FrozenDict(model.mixer_options or {}), mixer_pattern=pattern)
    rng = jax.random.key(0) if rng is None else rng
    return _generate(model, variables, prompt, rng, max_new_tokens=max_new_tokens, temperature=float(temperature))


@partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature"))
def _generate(model, variables, prompt, rng, *, max_new_tokens: int, temperature: float):
    step = partial(model.apply, variables, method=model.step)

    carry, logits = jax.lax.scan(step, model.init_carry(prompt.shape[0]), prompt.T)

    def choose(logits, key):
        if temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(prompt.dtype)
        return jax.random.categorical(key, logits / temperature, axis=-1).astype(prompt.dtype)

    def extend(state, key):
        carry, logits = state
        token = choose(logits, key)
        carry, logits = step(carry, token)
        return (carry, logits), token

    _, new_tokens = jax.lax.scan(extend, (carry, logits[-1]), jax.random.split(rng, max_new_tokens))
    return jnp.concatenate([prompt, new_tokens.T], axis=1)

"""Sequence mixers by name, and the face every one of them has, so that models and configs pick a
mixer without importing it and consumers rely on what it declares rather than on option names.

A mixer is a linen module class deriving from :class:`SequenceMixer`. Register a new one with
``@register_mixer("name")`` in its own module and import that module in :mod:`jaxattn.nn`; the
registry-wide tests (``tests/nn/test_mixer_registry.py``) then check its causality and its
decoding in every variant it lists, with no test written for it.

See docs/architecture.md#the-mixer-face and docs/architecture.md#the-registry.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_segment_ids

# The collection a mixer sows auxiliary training losses into (``self.sow(AUX_LOSS_COLLECTION, name,
# value)`` in ``__call__``): the train step sums every value sown there and adds it to the loss with
# ``config.train.aux_loss_weight`` (e.g. the router balance of :class:`jaxattn.nn.MixtureOfMemories`).
AUX_LOSS_COLLECTION = "losses"

# The one option name for a mixer's fixed cache size (the KV cache of softmax attention, the pair
# cache of tensor attention), so that the registry tests can shrink every such cache alike.
CACHE_SIZE_OPTION = "max_decode_length"


class SequenceMixer(nn.Module):
    """The mixer face.

    * ``__call__(x [B, L, H], *, segment_ids=None, train=False) -> [B, L, H]`` for whole sequences;
      ``segment_ids [B, L]`` mark packed sequences or padding.
    * ``init_carry(batch_size, features) -> carry`` and ``step(carry, x_t [B, H]) -> (carry, y_t [B, H])``
      decode token by token (``features``: H, the model width, which mixers with a state per
      feature need). ``step`` equals ``__call__`` position by position for the first
      :attr:`decode_capacity` tokens; past them it returns NaN, never a plausible wrong value.
    * ``causal: bool = True``: the one option that says causal or bidirectional, in every mixer that
      has both forms (``causal=False``: each output sees the whole segment; for SSMs a forward and
      a reverse recurrence). A mixer that is causal by construction has no such option.
    * :meth:`noncausal_options`: the options, as configured, that let an output see later tokens
      (empty: causal); by default ``{"causal": False}`` when the ``causal`` option is off. Causal
      consumers (:class:`jaxattn.models.LanguageModel`, ``step``) call :meth:`require_causal`
      instead of checking option names.
    * ``VARIANTS``: named option sets, the documented configurations (each mixer's docstring says
      what they are). The registry tests run the defaults and every variant.

    Example::

        mixer = make_mixer("s5", {"state_size": 16, "causal": False})
        mixer.is_causal, mixer.noncausal_options()                  # False, {'causal': False}
        x = jnp.ones((2, 50, 32))                                   # [B, L, H]
        y = mixer.apply(mixer.init(jax.random.key(0), x), x)        # [2, 50, 32]
    """

    VARIANTS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def noncausal_options(self) -> dict[str, Any]:
        """``{option: value}`` of the settings that make this mixer see later tokens; ``{}`` if causal.

        Reads the ``causal`` option; a mixer without one overrides this (a mixer that is always
        causal returns ``{}``), so that no mixer is taken as causal by omission.
        """
        if "causal" not in mixer_fields(type(self)):
            raise NotImplementedError(
                f"{type(self).__name__} has no `causal` option: it must declare noncausal_options()"
            )
        return {} if self.causal else {"causal": False}

    @property
    def is_causal(self) -> bool:
        """Whether every output ``y_t`` depends on ``x_1 .. x_t`` only, as configured."""
        return not self.noncausal_options()

    @property
    def decode_capacity(self) -> Optional[int]:
        """How many tokens ``step`` decodes exactly from ``init_carry``: None for any number (a
        recurrent state, or a sliding window that ``__call__`` applies too); past it ``step``
        returns NaN. 0: this configuration cannot decode (``step`` raises)."""
        return None

    def check_sequence(self, x: jax.Array, segment_ids: Optional[jax.Array] = None, *, width: str = "H") -> None:
        """Raises ``ValueError`` unless ``x`` is a batch of sequences ``[B, L, width]`` and ``segment_ids``
        (if given) are ``[B, L]``; ``TypeError`` for float ids. Every mixer calls it first, so a
        ``(1, L)`` array never broadcasts over the batch, whichever path (op or scan) reads the ids.
        """
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__}: x must be [B, L, {width}], got shape {x.shape}")
        require_segment_ids(type(self).__name__, segment_ids, x.shape[:2], layout="B, L")

    def require_causal(self, consumer: str) -> None:
        """Raises ``ValueError`` naming the options if this mixer, as configured, sees later tokens."""
        options = self.noncausal_options()
        if options:
            settings = ", ".join(f"{name}={value!r}" for name, value in options.items())
            raise ValueError(
                f"{consumer} needs a causal mixer, but {type(self).__name__} with {settings} lets each position "
                f"see later tokens; change {', '.join(options)}"
            )


def nan_past_capacity(y: jax.Array, position: jax.Array, capacity: int) -> jax.Array:
    """What ``step`` returns past its :attr:`SequenceMixer.decode_capacity`: ``y [B, ...]`` where the
    token's 0-based ``position [B]`` is below ``capacity``, NaN where it is not."""
    inside = (position < capacity).reshape(position.shape + (1,) * (y.ndim - position.ndim))
    return jnp.where(inside, y, jnp.nan)


MIXERS: dict[str, type[SequenceMixer]] = {}


def register_mixer(name: str) -> Callable[[type[SequenceMixer]], type[SequenceMixer]]:
    """Class decorator that adds a :class:`SequenceMixer` subclass to :data:`MIXERS` under ``name``."""

    def register(cls: type[SequenceMixer]) -> type[SequenceMixer]:
        if not (isinstance(cls, type) and issubclass(cls, SequenceMixer)):
            raise TypeError(f"register_mixer({name!r}): {cls!r} must subclass jaxattn.nn.SequenceMixer")
        if name in MIXERS and MIXERS[name] is not cls:
            raise ValueError(f"register_mixer: the name {name!r} is taken by {MIXERS[name].__name__}")
        unknown = {variant: sorted(set(options) - mixer_fields(cls)) for variant, options in cls.VARIANTS.items()}
        unknown = {variant: names for variant, names in unknown.items() if names}
        if unknown:
            raise ValueError(f"register_mixer({name!r}): VARIANTS name options {cls.__name__} lacks: {unknown}")
        MIXERS[name] = cls
        return cls

    return register


def mixer_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    """``{option: default}`` of a mixer class: its dataclass fields but linen's own (class
    variables such as ``VARIANTS`` are no fields)."""
    return {field.name: field.default for field in dataclasses.fields(cls) if field.name not in ("parent", "name")}


def mixer_fields(cls: type[nn.Module]) -> set[str]:
    """The option names of a mixer class (the keys of :func:`mixer_defaults`)."""
    return set(mixer_defaults(cls))


def mixer_class(mixer_name: str, options: Mapping[str, Any] = ()) -> type[SequenceMixer]:
    """``MIXERS[mixer_name]``, after checking that it is registered and has every option in ``options``."""
    if mixer_name not in MIXERS:
        raise ValueError(f"mixer {mixer_name!r} is not registered; known mixers: {sorted(MIXERS)}")
    cls = MIXERS[mixer_name]
    fields = mixer_fields(cls)
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"mixer {mixer_name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    return cls


def make_mixer(mixer_name: str, options: Mapping[str, Any], **module_kwargs) -> SequenceMixer:
    """``MIXERS[mixer_name](**options, **module_kwargs)`` with errors that name the bad field."""
    return mixer_class(mixer_name, options)(**options, **module_kwargs)


def layer_mixers(
    mixer: str, mixer_options: Optional[Mapping[str, Any]], mixer_pattern: Optional[Sequence], num_layers: int,
) -> list[tuple[str, dict[str, Any]]]:
    """``(mixer name, options)`` of each of ``num_layers`` layers.

    Without ``mixer_pattern`` every layer is ``mixer`` with ``mixer_options``. A hybrid stack gives
    ``mixer_pattern``, a sequence of ``(mixer name, options)`` pairs that repeats over the layers
    (e.g. three delta-rule layers then one softmax attention layer); ``num_layers`` must be a
    multiple of its length, and ``mixer`` / ``mixer_options`` are not used. Raises ``ValueError``
    naming a bad entry.
    """
    if not mixer_pattern:
        return [(mixer, dict(mixer_options or {}))] * num_layers
    pattern = []
    for i, entry in enumerate(mixer_pattern):
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"mixer_pattern[{i}] must be a (mixer name, options) pair, got {entry!r}")
        mixer_class(entry[0], entry[1] or {})
        pattern.append((entry[0], dict(entry[1] or {})))
    if num_layers % len(pattern):
        raise ValueError(f"num_layers={num_layers} is not a multiple of the mixer pattern's {len(pattern)} layers")
    return pattern * (num_layers // len(pattern))

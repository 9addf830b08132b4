"""Experiment configs and the one grammar of their argument.

Each module ``NAME.py`` here is a config file for ``--config=experiments/configs/NAME.py[:ARG]``
(ml_collections ``config_flags``): its ``get_config(arg)`` returns an ``ml_collections.ConfigDict``
that starts from :func:`jaxattn.train.default_config`. Every config reads ``ARG`` the same way:

    ARG = [VARIANT][,key=value[,key=value ...]]

* ``VARIANT`` names one of the module's ``VARIANTS`` (a dict of frozen dataclass instances, its
  *settings*: the mixer and its options, the task, ...); left out, the module's default variant.
* ``key=value`` replaces the field ``key`` of those settings; the value is parsed by the field's
  type: ``int``, ``float``, ``str``, ``bool`` (``true`` or ``false``) or a ``Literal`` of choices.
  Only such scalar fields are keys; fields that are records (a mixer with its options) are what
  the variants name.

For example ``lra.py:text,model=s4d,local=true`` or ``s5_digits.py:num_epochs=2``. A bad argument
fails before anything runs, naming its bad part: an unknown variant lists the variants, an
unknown key lists the keys, a bad value names the key and the type it must have. Fields of the
built config are still overridden with flags (``--config.train.num_epochs=5``).
"""

import dataclasses
import importlib
import typing
from typing import Any, Mapping, TypeVar

import ml_collections

from jaxattn.train import default_config
from jaxattn.train.config import mixer_options

Settings = TypeVar("Settings")
_BOOLS = {"true": True, "false": False}


@dataclasses.dataclass(frozen=True)
class MixerChoice:
    """A registered sequence mixer (``jaxattn.nn.registry``) and the options it is built with;
    options left out keep the mixer's defaults."""

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def config_options(self) -> dict:
        """Every option of the mixer, these ones set (so each can be overridden by a flag)."""
        return mixer_options(self.name, **self.options)


@dataclasses.dataclass(frozen=True)
class EpochSettings:
    """The settings of a config whose one knob is the number of training epochs (``num_epochs=N``)."""

    num_epochs: int


def argument_keys(settings_type: type) -> dict[str, Any]:
    """The fields of ``settings_type`` a ``key=value`` may set, with their types."""
    hints = typing.get_type_hints(settings_type)
    return {
        field.name: hints[field.name] for field in dataclasses.fields(settings_type)
        if hints[field.name] in (bool, int, float, str) or typing.get_origin(hints[field.name]) is typing.Literal
    }


def _parse_value(config_name: str, key: str, text: str, kind) -> Any:
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise ValueError(f"{config_name}: {key}={text!r} must be one of {choices}")
        return text
    if kind is bool:
        if text.lower() not in _BOOLS:
            raise ValueError(f"{config_name}: {key}={text!r} must be a bool (true or false)")
        return _BOOLS[text.lower()]
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{config_name}: {key}={text!r} must be of type {kind.__name__}") from None


def parse_argument(config_name: str, arg: str, variants: Mapping[str, Settings], default_variant: str) -> Settings:
    """``[VARIANT][,key=value ...]`` -> the variant's settings with those fields replaced.

    Raises ``ValueError`` naming the bad part: an unknown variant (listing ``variants``), an item
    that is not ``key=value`` after the first, an unknown or repeated key (listing the keys), a
    value that does not parse as its field's type.
    """
    items = [item.strip() for item in arg.split(",")] if arg.strip() else []
    variant = default_variant
    if items and "=" not in items[0]:
        variant = items.pop(0)
        if variant not in variants:
            raise ValueError(f"{config_name}: unknown variant {variant!r}; variants: {', '.join(variants)}")
    settings = variants[variant]
    keys = argument_keys(type(settings))
    overrides = {}
    for item in items:
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals:
            raise ValueError(f"{config_name}: {item!r} is not key=value (the argument is VARIANT[,key=value,...]; "
                             f"variants: {', '.join(variants)})")
        if key not in keys:
            listed = ", ".join(keys) if keys else "none"
            raise ValueError(f"{config_name}: unknown key {key!r}; keys: {listed}")
        if key in overrides:
            raise ValueError(f"{config_name}: key {key!r} is given twice")
        overrides[key] = _parse_value(config_name, key, text.strip(), keys[key])
    return dataclasses.replace(settings, **overrides)


def experiment_config(*, task: str, task_options: Mapping[str, Any], mixer: MixerChoice, model: Mapping[str, Any],
                      optimizer: Mapping[str, Any], train: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """:func:`default_config` with the task, the mixer and the given fields of ``config.model``,
    ``config.optimizer`` and ``config.train`` set; every other field keeps its default."""
    config = default_config()
    config.task.name = task
    config.task.options = dict(task_options)
    # Assigned, not merged: ConfigDict.update would mix the default mixer's options into these.
    config.model.mixer = mixer.name
    config.model.mixer_options = mixer.config_options()
    config.model.update(dict(model))
    config.optimizer.update(dict(optimizer))
    config.train.update(dict(train))
    return config


def load_config(name: str, arg: str = "") -> ml_collections.ConfigDict:
    """``experiments/configs/NAME.py:ARG`` as a ConfigDict, for notebooks and tests."""
    return importlib.import_module(f"experiments.configs.{name}").get_config(arg)

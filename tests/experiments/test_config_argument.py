"""The one grammar of ``--config=experiments/configs/NAME.py:[VARIANT][,key=value ...]``: variants,
overrides parsed by their field's type, an error naming each kind of bad part; every shipped config
builds and validates for every variant."""

import dataclasses
import importlib
import pkgutil
from typing import Literal

import pytest

import experiments.configs
from experiments.configs import MixerChoice, argument_keys, load_config, parse_argument
from jaxattn.train import validate_config

CONFIG_NAMES = sorted(module.name for module in pkgutil.iter_modules(experiments.configs.__path__))


@dataclasses.dataclass(frozen=True)
class Example:
    mixer: MixerChoice
    depth: int = 2
    rate: float = 0.5
    label: str = "a"
    flag: bool = False
    size: Literal["small", "large"] = "small"


EXAMPLES = {"one": Example(MixerChoice("s5")), "two": Example(MixerChoice("s4"), depth=4)}


def parse(arg):
    return parse_argument("example", arg, EXAMPLES, "one")


def test_the_variant_picks_settings_and_the_default_fills_in():
    assert parse("") == EXAMPLES["one"]
    assert parse("two") == EXAMPLES["two"]
    assert parse("depth=3") == dataclasses.replace(EXAMPLES["one"], depth=3)


def test_overrides_are_parsed_by_the_type_of_their_field():
    got = parse("two, depth=7,rate=1e-3,label=b c,flag=True,size=large")
    assert got == Example(MixerChoice("s4"), depth=7, rate=1e-3, label="b c", flag=True, size="large")
    assert type(got.depth) is int and type(got.rate) is float
    assert parse("flag=false").flag is False


def test_only_scalar_fields_are_keys():
    assert list(argument_keys(Example)) == ["depth", "rate", "label", "flag", "size"]


@pytest.mark.parametrize(
    "arg, message",
    [
        ("three", r"example: unknown variant 'three'; variants: one, two"),
        ("two,dpeth=3", r"example: unknown key 'dpeth'; keys: depth, rate, label, flag, size"),
        ("two,mixer=s4", r"example: unknown key 'mixer'"),
        ("depth=3.5", r"example: depth='3.5' must be of type int"),
        ("rate=fast", r"example: rate='fast' must be of type float"),
        ("flag=yes", r"example: flag='yes' must be a bool \(true or false\)"),
        ("size=huge", r"example: size='huge' must be one of \('small', 'large'\)"),
        ("two,one",
         r"example: 'one' is not key=value \(the argument is VARIANT\[,key=value,...\]; variants: one, two\)"),
        ("depth=3,two", r"example: 'two' is not key=value"),
        ("depth=3,depth=4", r"example: key 'depth' is given twice"),
        ("two,", r"example: '' is not key=value"),
    ],
)
def test_each_bad_part_is_named(arg, message):
    with pytest.raises(ValueError, match=message):
        parse(arg)


def test_a_config_without_keys_says_so():
    with pytest.raises(ValueError, match=r"recall: unknown key 'num_epochs'; keys: none"):
        load_config("recall", "linear,num_epochs=3")


def test_overrides_reach_the_built_config():
    assert load_config("s5_digits", "num_epochs=2").train.num_epochs == 2
    assert load_config("attention_digits", "linear_attention,num_epochs=3").train.num_epochs == 3
    local = load_config("s5_listops", "local=true")
    assert local.model.d_model == 64 and local.task.options.max_length == 256
    assert load_config("lra", "text,model=s4d").model.mixer == "s4d"


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_builds_a_valid_config_for_every_variant(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    assert module.VARIANTS, f"{name} names no variants"
    for variant in module.VARIANTS:
        config = load_config(name, variant)
        validate_config(config)
    validate_config(module.get_config())  # config_flags calls get_config() for NAME.py without :ARG


def test_derived_configs_keep_their_parents_settings():
    """s5_listops is lra's published S5 on ListOps with the task generated; attention_digits is
    s5_digits with an attention mixer."""
    listops, lra = load_config("s5_listops"), load_config("lra", "listops,model=s5")
    for group in ("model", "optimizer", "train"):
        assert listops[group].to_dict() == lra[group].to_dict(), group
    assert listops.task.name == "listops" and listops.task.options.max_length == 2000
    attention, digits = load_config("attention_digits"), load_config("s5_digits")
    assert attention.optimizer.to_dict() == digits.optimizer.to_dict()
    assert attention.train.to_dict() == digits.train.to_dict()

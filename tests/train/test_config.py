"""Config validation: bad fields fail at start-up with a message naming the field."""

import ml_collections
import pytest

from experiments.configs import load_config
from jaxattn.train import default_config, validate_config


@pytest.mark.parametrize(
    "name, arg",
    [("s5_digits", ""), ("s5_listops", ""), ("s5_listops", "local=true"), ("s5_parity", "")]
    + [("recall", variant) for variant in ("softmax", "linear", "hedgehog", "based", "decay", "gated")]
    + [("triple_sum", variant) for variant in ("softmax", "tensor", "tensor_bias")],
)
def test_shipped_configs_are_valid(name, arg):
    validate_config(load_config(name, arg))


def mutate(path: str, value):
    config = default_config()
    *parents, leaf = path.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    return config


@pytest.mark.parametrize(
    "path, value, match",
    [
        ("model.nrom", "layer", r"config.model.nrom is not a config field"),
        ("model.norm", "group", r"config.model.norm='group' is not one of"),
        ("model.mixer", "mamba", r"config.model.mixer='mamba' is not one of"),
        ("model.dropout", 1.5, r"config.model.dropout=1.5 must be in \[0, 1\)"),
        ("task.name", "imdb", r"config.task.name='imdb' is not one of"),
        ("optimizer.lr", -1.0, r"config.optimizer.lr=-1.0 must be > 0"),
        ("train.batch_size", 0, r"config.train.batch_size=0 must be >= 1"),
        ("train.checkpoint_every_steps", 15, r"config.train.checkpoint_every_steps=15 must be a multiple"),
        ("mesh.data", 0, r"config.mesh.data=0 must be -1 or >= 1"),
    ],
)
def test_bad_fields_are_named(path, value, match):
    with pytest.raises(ValueError, match=match):
        validate_config(mutate(path, value))


@pytest.mark.parametrize("field, value, match", [("d_model", "wide", "must be of type int"), ("prenorm", 1, "must be of type bool")])
def test_wrong_types_are_named(field, value, match):
    """ConfigDict refuses a retyped override; a config file that rebuilds a group is checked here."""
    config = default_config()
    model = config.model.to_dict()
    model[field] = value
    config.model = ml_collections.ConfigDict(model)
    with pytest.raises(ValueError, match=rf"config.model.{field}={value!r} {match}"):
        validate_config(config)


def test_missing_field_is_named():
    config = default_config()
    del config.train["num_epochs"]
    with pytest.raises(ValueError, match="config.train.num_epochs is missing"):
        validate_config(config)


def test_listops_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="'laptop'"):
        load_config("s5_listops", "laptop")


def test_arithmetic_fields_are_validated_and_built():
    from jaxattn.nn.arithmetic import Arithmetic
    from jaxattn.train.config import arithmetic_from_config

    config = default_config()
    assert arithmetic_from_config(config.model) is None
    config.model.arithmetic.kind = "lmul"
    config.model.arithmetic.mantissa_bits = 4
    assert arithmetic_from_config(config.model) == Arithmetic(kind="lmul", mantissa_bits=4)
    config.model.arithmetic.kind = "int4"
    with pytest.raises(ValueError, match="config.model.arithmetic.kind='int4' is not one of"):
        validate_config(config)

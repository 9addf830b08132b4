"""Experiment configs: each module's ``get_config(arg)`` returns an ``ml_collections.ConfigDict``."""

import importlib

import ml_collections


def load_config(name: str, arg: str = "") -> ml_collections.ConfigDict:
    """``experiments/configs/NAME.py:ARG`` as a ConfigDict, for notebooks and tests."""
    return importlib.import_module(f"experiments.configs.{name}").get_config(arg)

"""Training: optimiser groups, sharded steps, orbax checkpoints, metrics and the loop."""

from jaxattn.train.config import default_config, validate_config
from jaxattn.train.loop import (
    build_experiment,
    build_model,
    evaluate_variables,
    restore_variables,
    train_and_evaluate,
)

__all__ = [
    "build_experiment", "build_model", "default_config", "evaluate_variables", "restore_variables",
    "train_and_evaluate", "validate_config",
]

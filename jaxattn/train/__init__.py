"""Training: optimiser groups, sharded steps, orbax checkpoints, metrics and the loop."""

from jaxattn.train.config import default_config, validate_config
from jaxattn.train.loop import build_model, train_and_evaluate

__all__ = ["build_model", "default_config", "train_and_evaluate", "validate_config"]

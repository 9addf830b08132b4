"""jaxattn: efficient sequence mixers in JAX (state space models, linear, tensor and L-Mul attention)."""

__version__ = "0.1.0"

"""Flax linen modules: sequence mixers and the blocks around them."""

from jaxattn.nn.s5 import S5

__all__ = ["S5"]

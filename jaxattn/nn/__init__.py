"""Flax linen modules: sequence mixers and the blocks around them."""

from jaxattn.nn.blocks import MixerBlock
from jaxattn.nn.registry import MIXERS, make_mixer, register_mixer
from jaxattn.nn.s5 import S5

__all__ = ["MIXERS", "MixerBlock", "S5", "make_mixer", "register_mixer"]

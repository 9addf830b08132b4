"""Flax linen modules: sequence mixers and the blocks around them."""

from jaxattn.nn.attention import MultiHeadAttention
from jaxattn.nn.blocks import MixerBlock
from jaxattn.nn.delta_net import DeltaNet
from jaxattn.nn.linear_attention import LinearAttention
from jaxattn.nn.mixture_of_memories import MixtureOfMemories
from jaxattn.nn.registry import MIXERS, SequenceMixer, make_mixer, register_mixer
from jaxattn.nn.s4 import S4
from jaxattn.nn.s4d import S4D
from jaxattn.nn.s5 import S5
from jaxattn.nn.tensor_attention import TensorAttention

__all__ = ["MIXERS", "DeltaNet", "LinearAttention", "MixerBlock", "MixtureOfMemories", "MultiHeadAttention", "S4", "S4D", "S5", "SequenceMixer",
           "TensorAttention", "make_mixer", "register_mixer"]

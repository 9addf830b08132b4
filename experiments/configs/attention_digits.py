"""A 4-layer bidirectional attention classifier on sequential 8x8 digits: ``attention_digits.py:MIXER``.

MIXER is ``softmax_attention`` (default; rotary positions) or ``linear_attention``; 2 heads of 32,
LayerNorm, dropout 0.1, 60 epochs (``--config.train.num_epochs``). The softmax model is the teacher
of the Hedgehog conversion and the subject of the L-Mul precision study.
"""

from experiments.configs.s5_digits import get_config as s5_digits_config
from jaxattn.train.config import mixer_options

ATTENTION = dict(num_heads=2, head_dim=32, causal=False, rotary=True)
# Linear attention normalised, as the softmax it stands in for (and Hedgehog's students) is.
MIXER_OPTIONS = {"softmax_attention": ATTENTION, "linear_attention": dict(ATTENTION, normalize=True)}
MIXERS = tuple(MIXER_OPTIONS)


def get_config(arg: str = "softmax_attention"):
    mixer = arg or "softmax_attention"
    if mixer not in MIXERS:
        raise ValueError(f"attention_digits: config argument must be one of {MIXERS}, got {arg!r}")
    config = s5_digits_config("60")
    config.model.mixer = mixer
    config.model.mixer_options = mixer_options(mixer, **MIXER_OPTIONS[mixer])
    config.model.norm = "layer"
    config.model.dropout = 0.1
    return config

"""A 4-layer bidirectional attention classifier on sequential 8x8 digits: ``attention_digits.py:MIXER``.

MIXER is ``softmax_attention`` (default; rotary positions) or ``linear_attention``; 2 heads of 32,
LayerNorm, dropout 0.1, 60 epochs (``num_epochs=N``). The rest is ``s5_digits.py``'s classifier,
optimiser and schedule. The softmax model is the teacher of the Hedgehog conversion and the
subject of the L-Mul precision study.

Argument (``experiments/configs/__init__.py``): ``attention_digits.py[:MIXER][,num_epochs=N]``.
"""

import dataclasses

from experiments.configs import EpochSettings, MixerChoice, parse_argument, s5_digits

ATTENTION = dict(num_heads=2, head_dim=32, causal=False, rotary=True)


@dataclasses.dataclass(frozen=True)
class Settings:
    mixer: MixerChoice
    num_epochs: int = 60


VARIANTS = {
    "softmax_attention": Settings(MixerChoice("softmax_attention", ATTENTION)),
    # Linear attention normalised, as the softmax it stands in for (and Hedgehog's students) is.
    "linear_attention": Settings(MixerChoice("linear_attention", dict(ATTENTION, normalize=True))),
}


def build(settings: Settings):
    config = s5_digits.build(EpochSettings(num_epochs=settings.num_epochs))
    config.model.mixer = settings.mixer.name
    config.model.mixer_options = settings.mixer.config_options()
    config.model.update(norm="layer", dropout=0.1)
    return config


def get_config(arg: str = ""):
    return build(parse_argument("attention_digits", arg, VARIANTS, "softmax_attention"))

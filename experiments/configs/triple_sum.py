"""Triple sums mod M (``jaxattn.data.triples``) with one mixer per argument: ``triple_sum.py:MIXER``.

Position i is labelled by whether some pair (j, k) has ``x_i + x_j + x_k = 0 (mod 48)``; 8 tokens,
55 % of the positions positive. A one-layer bidirectional token classifier of width 64 (the
separation of Sanford et al. is about one layer) with

  * ``softmax``: softmax attention, 3 heads of 32 (q, k, v, out: 24,928 parameters per layer);
  * ``tensor``: 2-simplicial attention, 2 heads of 32 (q, k1, k2, v1, v2, out: 24,960 per layer);
  * ``tensor_bias``: the same with the ``k2 + 1/D``, ``v2 + 1`` parameterisation.

The attention layers have equal parameter counts (to 0.2 %); everything around them is the same.
Neither uses positions: the labels do not depend on the order of the tokens.

Argument (``experiments/configs/__init__.py``): ``triple_sum.py[:MIXER]``, ``tensor`` by default.
"""

import dataclasses

from experiments.configs import MixerChoice, experiment_config, parse_argument


@dataclasses.dataclass(frozen=True)
class Settings:
    mixer: MixerChoice


VARIANTS = {
    "softmax": Settings(MixerChoice("softmax_attention", dict(num_heads=3, head_dim=32, causal=False, rotary=False))),
    "tensor": Settings(MixerChoice("tensor_attention", dict(num_heads=2, head_dim=32, causal=False))),
    "tensor_bias": Settings(MixerChoice("tensor_attention", dict(num_heads=2, head_dim=32, causal=False, bias=True))),
}


def build(settings: Settings):
    return experiment_config(
        task="triple_sum",
        task_options=dict(num_train=50_000, num_validation=2_000, num_test=2_000, seq_len=8, modulus=48, seed=0),
        mixer=settings.mixer,
        model=dict(d_model=64, num_layers=1, norm="layer", pooling="none", activation="full_glu", dropout=0.0),
        optimizer=dict(lr=3e-3, ssm_lr=3e-3, weight_decay=0.01, warmup_epochs=0.5),
        train=dict(batch_size=64, num_epochs=10, log_every_steps=50, eval_every_steps=1_000,
                   checkpoint_every_steps=500),
    )


def get_config(arg: str = ""):
    return build(parse_argument("triple_sum", arg, VARIANTS, "tensor"))

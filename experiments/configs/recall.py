"""Multi-query associative recall with one mixer per argument: ``recall.py:MIXER``.

MIXER is one of ``softmax`` (the baseline, with rotary positions), ``softmax_noconv`` (the same without the
short convolution every other variant has), ``linear`` (elu + 1), ``hedgehog``, ``based``
(second-order Taylor features), ``decay`` (elu + 1 with RetNet's per-head decay) or ``gated``
(elu + 1 with a data-dependent gate), ``delta_net`` (the delta rule) or ``gated_delta_net`` (with
the Mamba-2 decay and output gate). A 2-layer causal language model of width 64 reads 4
key-value pairs and answers 32 queries among 24 distractors (sequences of 64 tokens, 64 keys,
64 values); accuracy is over the query positions only. The number of pairs is the difficulty
knob (``--config.task.options.num_pairs``): sized so that the CPU budget of 10 epochs suffices.

Argument (``experiments/configs/__init__.py``): ``recall.py[:MIXER]``, ``softmax`` by default.
"""

import dataclasses

from experiments.configs import MixerChoice, experiment_config, parse_argument

# Every layer gets a short convolution (width 4), as in Zoology and fla: without it (and without
# positions) a linear attention layer cannot tell a key from the value that follows it.
_ATTENTION = dict(num_heads=2, head_dim=32, short_conv=4)
_SOFTMAX = dict(_ATTENTION, rotary=True, max_decode_length=64)
_LINEAR = dict(_ATTENTION, normalize=True)  # every linear variant divides by its normaliser


@dataclasses.dataclass(frozen=True)
class Settings:
    mixer: MixerChoice


VARIANTS = {
    "softmax": Settings(MixerChoice("softmax_attention", _SOFTMAX)),
    "softmax_noconv": Settings(MixerChoice("softmax_attention", dict(_SOFTMAX, short_conv=0))),
    "linear": Settings(MixerChoice("linear_attention", dict(_LINEAR, feature_map="elu_plus_one"))),
    "hedgehog": Settings(MixerChoice("linear_attention", dict(_LINEAR, feature_map="hedgehog"))),
    "based": Settings(MixerChoice("linear_attention", dict(_LINEAR, head_dim=16, feature_map="taylor_exp"))),
    "decay": Settings(MixerChoice("linear_attention", dict(_LINEAR, feature_map="elu_plus_one", gate="decay"))),
    "gated": Settings(MixerChoice("linear_attention", dict(_LINEAR, feature_map="elu_plus_one", gate="data"))),
    "delta_net": Settings(MixerChoice("delta_net", _ATTENTION)),
    "gated_delta_net": Settings(MixerChoice("delta_net", dict(_ATTENTION, gated=True, output_gate=True))),
}


def build(settings: Settings):
    return experiment_config(
        task="recall",
        task_options=dict(num_train=20_000, num_validation=1_000, num_test=1_000, num_keys=64, num_values=64,
                          num_pairs=4, seq_len=64, num_queries=32, seed=0),
        mixer=settings.mixer,
        model=dict(kind="language_model", d_model=64, num_layers=2, norm="layer", activation="full_glu", dropout=0.0),
        optimizer=dict(lr=3e-3, ssm_lr=3e-3, weight_decay=0.1, warmup_epochs=0.5),
        train=dict(batch_size=64, num_epochs=10, log_every_steps=50, eval_every_steps=625, checkpoint_every_steps=500),
    )


def get_config(arg: str = ""):
    return build(parse_argument("recall", arg, VARIANTS, "softmax"))

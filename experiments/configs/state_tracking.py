"""Word problems (state tracking) with one model per argument: ``state_tracking.py:MODEL``.

A one-layer causal tagger of width 64 reads a word over a group (``config.task.options.group``,
default ``Z2``: parity) and predicts the running product at every position. MODEL is one of:

* ``delta_net``: DeltaNet, beta in [0, 1] (transition eigenvalues in [0, 1]);
* ``delta_net_negative``: beta in [0, 2] (eigenvalues in [-1, 1]);
* ``delta_product_negative``: DeltaProduct, two Householder steps per token, beta in [0, 2];
* ``gated``: gated linear attention, diagonal transitions ``a_t = sigmoid(z)`` in (0, 1);
* ``gated_negative``: the same with ``a_t = 2 sigmoid(z) - 1`` in (-1, 1);
* ``softmax``: softmax attention with rotary positions (the baseline).

Training words have 2..``train_length`` letters; ``experiments/state_tracking.py`` tests on longer
ones. The gate temperature is 1, so a gate can reach -1 (at 16, ``2 sigmoid(z)^(1/16) - 1`` stays
far above it for any reachable ``z``). No model has a short convolution: with one, a letter's key
and beta also depend on the letters before it, and the transition is no longer a function of the
letter alone (measured: DeltaNet with beta in [0, 2] reaches 0.92 on parity at the training length
and chance at 4x with a width-4 convolution, 1.0 at 8x without). No weight decay: it pulls beta away
from the ends 0 and 2 that an exact reflection needs.

Argument (``experiments/configs/__init__.py``): ``state_tracking.py[:MODEL]``, ``delta_net_negative``
by default.
"""

import dataclasses

from experiments.configs import MixerChoice, experiment_config, parse_argument

_HEADS = dict(num_heads=2, head_dim=32, short_conv=0)
_GATED = dict(_HEADS, feature_map="identity", gate="data", gate_temperature=1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    mixer: MixerChoice


VARIANTS = {
    "delta_net": Settings(MixerChoice("delta_net", _HEADS)),
    "delta_net_negative": Settings(MixerChoice("delta_net", dict(_HEADS, negative_eigenvalues=True))),
    "delta_product_negative": Settings(
        MixerChoice("delta_net", dict(_HEADS, householder_steps=2, negative_eigenvalues=True))),
    "gated": Settings(MixerChoice("linear_attention", _GATED)),
    "gated_negative": Settings(MixerChoice("linear_attention", dict(_GATED, negative_eigenvalues=True))),
    "softmax": Settings(MixerChoice("softmax_attention", dict(_HEADS, rotary=True, max_decode_length=1024))),
}


def build(settings: Settings):
    return experiment_config(
        task="word_problem",
        task_options=dict(group="Z2", train_length=32, min_train_length=2, test_lengths=(32,), num_train=10_000,
                          num_validation=500, num_test_per_length=500, seed=0),
        mixer=settings.mixer,
        model=dict(kind="language_model", d_model=64, num_layers=1, dropout=0.0),
        optimizer=dict(lr=3e-3, ssm_lr=3e-3, weight_decay=0.0, warmup_epochs=0.5),
        train=dict(batch_size=64, num_epochs=20, log_every_steps=100, eval_every_steps=1000,
                   checkpoint_every_steps=500),
    )


def get_config(arg: str = ""):
    return build(parse_argument("state_tracking", arg, VARIANTS, "delta_net_negative"))

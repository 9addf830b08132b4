"""MQAR at a hard setting, more memories against a hybrid stack: ``recall_memories.py:MODEL[,num_pairs=N]``.

MODEL is one of ``gated_delta_net`` (4 Gated DeltaNet layers), ``mom`` (4 Mixture-of-Memories layers
over the same recurrence: 4 memories, top 2, a shared memory), ``hybrid`` (three Gated DeltaNet
layers then one softmax attention layer) or ``softmax`` (4 softmax attention layers). Small heads
(2 of 16, so one delta-rule state holds about 16 orthogonal keys per head) make 16-64 key-value
pairs a load a single state does not hold comfortably. The widths are chosen for equal parameter
budgets (76-79k parameters each, printed by the run). Each sequence lists ``num_pairs`` pairs
(keys among 128, values among 64), then 64 query-part tokens with 32 queries.

Argument (``experiments/configs/__init__.py``): ``recall_memories.py[:MODEL][,num_pairs=N][,num_epochs=E]``,
``gated_delta_net`` with 16 pairs by default. The comparison over pairs and seeds:
``python -m experiments.recall_memories`` (see ``results/recall_memories/``).
"""

import dataclasses
from typing import Literal

from experiments.configs import MixerChoice, experiment_config, parse_argument
from jaxattn.train.config import mixer_options

Model = Literal["gated_delta_net", "mom", "hybrid", "softmax"]
QUERY_PART, NUM_QUERIES = 64, 32
_HEADS = dict(num_heads=2, head_dim=16, short_conv=4)
_GATED_DELTA = MixerChoice("delta_net", dict(_HEADS, gated=True, output_gate=True))
_MOM = MixerChoice("mom", dict(_HEADS, num_memories=4, top_k=2, shared_memory=True))
_SOFTMAX = dict(_HEADS, rotary=True, max_decode_length=256)
# d_model per model for about equal parameter counts (MoM's memories have their own k, v projections).
_WIDTHS = {"gated_delta_net": 56, "mom": 32, "hybrid": 58, "softmax": 62}


@dataclasses.dataclass(frozen=True)
class Settings:
    model: Model = "gated_delta_net"
    num_pairs: int = 16
    num_epochs: int = 8


VARIANTS = {model: Settings(model) for model in Model.__args__}


def build(settings: Settings):
    mixer = _MOM if settings.model == "mom" else _GATED_DELTA
    model = dict(kind="language_model", d_model=_WIDTHS[settings.model], num_layers=4, norm="layer",
                 activation="full_glu", dropout=0.0)
    if settings.model == "softmax":
        mixer = MixerChoice("softmax_attention", _SOFTMAX)
    if settings.model == "hybrid":
        model.update(mixer_pattern="mixer,mixer,mixer,attention",
                     layer_mixers={"attention": {"mixer": "softmax_attention",
                                                 "mixer_options": mixer_options("softmax_attention", **_SOFTMAX)}})
    return experiment_config(
        task="recall",
        task_options=dict(num_train=10_000, num_validation=500, num_test=1_000, num_keys=128, num_values=64,
                          num_pairs=settings.num_pairs, seq_len=2 * settings.num_pairs + QUERY_PART,
                          num_queries=NUM_QUERIES, seed=0),
        mixer=mixer,
        model=model,
        optimizer=dict(lr=3e-3, ssm_lr=3e-3, weight_decay=0.1, warmup_epochs=0.5),
        train=dict(batch_size=64, num_epochs=settings.num_epochs, log_every_steps=52, eval_every_steps=312,
                   checkpoint_every_steps=156),
    )


def get_config(arg: str = ""):
    return build(parse_argument("recall_memories", arg, VARIANTS, "gated_delta_net"))

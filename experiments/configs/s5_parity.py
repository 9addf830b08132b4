"""Parity of a bit string with a causal S5: a state-tracking probe.

The label is the XOR of 16..64 bits, read at the last real step of a unidirectional S5, so the
state must carry one bit of memory through every token.

Argument (``experiments/configs/__init__.py``): ``s5_parity.py[:num_epochs=N]``, 20 epochs by default.
"""

from experiments.configs import EpochSettings, MixerChoice, experiment_config, parse_argument

S5 = MixerChoice("s5", dict(state_size=32, blocks=4, causal=True))
VARIANTS = {"s5": EpochSettings(num_epochs=20)}


def build(settings: EpochSettings):
    return experiment_config(
        task="parity",
        task_options=dict(num_train=20_000, num_validation=1_000, num_test=1_000, min_length=16, max_length=64),
        mixer=S5,
        model=dict(d_model=64, num_layers=2, pooling="last"),
        optimizer=dict(lr=2e-3, ssm_lr=1e-3, weight_decay=0.01),
        train=dict(batch_size=64, num_epochs=settings.num_epochs, log_every_steps=50, checkpoint_every_steps=500),
    )


def get_config(arg: str = ""):
    return build(parse_argument("s5_parity", arg, VARIANTS, "s5"))

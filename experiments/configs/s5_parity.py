"""Parity of a bit string with a causal S5: a state-tracking probe.

The label is the XOR of 16..64 bits, read at the last real step of a unidirectional S5, so the
state must carry one bit of memory through every token. ``:ARG`` sets the number of epochs.
"""

from jaxattn.train import default_config
from jaxattn.train.config import mixer_options


def get_config(arg: str = ""):
    config = default_config()
    config.task.name = "parity"
    config.task.options = dict(num_train=20_000, num_validation=1_000, num_test=1_000, min_length=16, max_length=64)
    config.model.mixer = "s5"
    config.model.mixer_options = mixer_options("s5", state_size=32, blocks=4, bidirectional=False)
    config.model.d_model = 64
    config.model.num_layers = 2
    config.model.pooling = "last"
    config.optimizer.lr = 2e-3
    config.optimizer.ssm_lr = 1e-3
    config.optimizer.weight_decay = 0.01
    config.train.batch_size = 64
    config.train.num_epochs = int(arg) if arg else 20
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 500
    return config

"""The default experiment: a 4-layer bidirectional S5 on sequential 8x8 digits (length 64, 10 classes).

What takes it past 98 % test accuracy: dropout, BatchNorm, and initial timescales spread over
``dt`` in [1e-3, 1] (memories from one step to about a thousand) rather than S5's default
[1e-3, 1e-1], which is tuned for sequences of thousands of steps; with the default range and
LayerNorm it plateaus near 96 %. ``:ARG`` sets the number of epochs.
"""

from jaxattn.train import default_config
from jaxattn.train.config import mixer_options


def get_config(arg: str = ""):
    config = default_config()
    config.task.name = "digits"
    config.model.mixer = "s5"
    config.model.mixer_options = mixer_options(
        "s5", state_size=32, blocks=4, bidirectional=True, C_init="lecun_normal", dt_min=1e-3, dt_max=1.0
    )
    config.model.d_model = 64
    config.model.num_layers = 4
    config.model.norm = "batch"
    config.model.activation = "half_glu1"
    config.model.dropout = 0.2
    config.optimizer.lr = 4e-3
    config.optimizer.ssm_lr = 2e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.warmup_epochs = 5.0
    config.train.batch_size = 64
    config.train.num_epochs = int(arg) if arg else 60
    config.train.log_every_steps = 10
    config.train.checkpoint_every_steps = 100
    return config

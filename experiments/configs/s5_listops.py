"""S5 on ListOps with the published Long Range Arena hyperparameters (Smith et al. 2023).

H=128, N=16 (P=8 with conjugate symmetry), J=8 blocks, 8 layers, batch 50, 40 epochs,
lr 3e-3, ssm_lr 1e-3, weight decay 0.04, pre-norm BatchNorm, bidirectional, half_glu2,
C lecun-normal, no dropout, 1 warmup epoch; LRA data: 96k/2k/2k expressions of 500..2000 tokens.
The 96k expressions take about two minutes to generate and are cached in ``task.options.cache_dir``.

``:local`` shrinks everything to run on a laptop CPU in a few minutes (8k expressions of at most
256 tokens, 4 layers of width 64).
"""

import os

from jaxattn.train import default_config
from jaxattn.train.config import mixer_options


def get_config(arg: str = ""):
    if arg not in ("", "local"):
        raise ValueError(f"s5_listops: config argument must be '' or 'local', got {arg!r}")
    config = default_config()
    config.task.name = "listops"
    config.task.options = dict(
        num_train=96_000, num_validation=2_000, num_test=2_000, min_length=500, max_length=2000,
        max_depth=10, max_args=10, seed=0, cache_dir=os.path.expanduser("~/.cache/jaxattn/listops"),
    )
    config.model.mixer = "s5"
    config.model.mixer_options = mixer_options("s5", state_size=16, blocks=8, bidirectional=True, C_init="lecun_normal")
    config.model.d_model = 128
    config.model.num_layers = 8
    config.model.norm = "batch"
    config.model.prenorm = True
    config.model.activation = "half_glu2"
    config.model.dropout = 0.0
    config.model.pooling = "mean"
    config.optimizer.lr = 3e-3
    config.optimizer.ssm_lr = 1e-3
    config.optimizer.weight_decay = 0.04
    config.optimizer.warmup_epochs = 1.0
    config.train.batch_size = 50
    config.train.eval_batch_size = 50
    config.train.num_epochs = 40
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 1000
    if arg == "local":
        config.task.options.update(
            num_train=8_000, num_validation=500, num_test=500, min_length=32, max_length=256, max_depth=5
        )
        config.model.mixer_options = mixer_options("s5", state_size=16, blocks=4, bidirectional=True, C_init="lecun_normal")
        config.model.d_model = 64
        config.model.num_layers = 4
        config.train.batch_size = 32
        config.train.eval_batch_size = 100
        config.train.num_epochs = 5
        config.train.log_every_steps = 25
        config.train.checkpoint_every_steps = 250
    return config

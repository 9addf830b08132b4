"""Triple sums mod M (``jaxattn.data.triples``) with one mixer per argument: ``triple_sum.py:MIXER``.

Position i is labelled by whether some pair (j, k) has ``x_i + x_j + x_k = 0 (mod 48)``; 8 tokens,
55 % of the positions positive. A one-layer bidirectional token classifier of width 64 (the
separation of Sanford et al. is about one layer) with

  * ``softmax``: softmax attention, 3 heads of 32 (q, k, v, out: 24,928 parameters per layer);
  * ``tensor``: 2-simplicial attention, 2 heads of 32 (q, k1, k2, v1, v2, out: 24,960 per layer);
  * ``tensor_bias``: the same with the ``k2 + 1/D``, ``v2 + 1`` parameterisation.

The attention layers have equal parameter counts (to 0.2 %); everything around them is the same.
Neither uses positions: the labels do not depend on the order of the tokens.
"""

from jaxattn.train import default_config
from jaxattn.train.config import mixer_options

VARIANTS = {
    "softmax": ("softmax_attention", dict(num_heads=3, head_dim=32, causal=False, rotary=False)),
    "tensor": ("tensor_attention", dict(num_heads=2, head_dim=32, causal=False)),
    "tensor_bias": ("tensor_attention", dict(num_heads=2, head_dim=32, causal=False, bias=True)),
}


def get_config(arg: str = "tensor"):
    if arg not in VARIANTS:
        raise ValueError(f"triple_sum: config argument must be one of {sorted(VARIANTS)}, got {arg!r}")
    mixer, options = VARIANTS[arg]
    config = default_config()
    config.task.name = "triple_sum"
    config.task.options = dict(num_train=50_000, num_validation=2_000, num_test=2_000, seq_len=8, modulus=48, seed=0)
    config.model.mixer = mixer
    config.model.mixer_options = mixer_options(mixer, **options)
    config.model.d_model = 64
    config.model.num_layers = 1
    config.model.norm = "layer"
    config.model.pooling = "none"
    config.model.activation = "full_glu"
    config.model.dropout = 0.0
    config.optimizer.lr = 3e-3
    config.optimizer.ssm_lr = 3e-3
    config.optimizer.weight_decay = 0.01
    config.optimizer.warmup_epochs = 0.5
    config.train.batch_size = 64
    config.train.num_epochs = 10
    config.train.log_every_steps = 50
    config.train.eval_every_steps = 1_000
    config.train.checkpoint_every_steps = 500
    return config

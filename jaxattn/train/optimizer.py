"""Optimiser with the S5 parameter groups, matched on full parameter paths.

docs/ssm.md#training-the-ssm-parameters: the SSM parameters (S5's ``Lambda_re``, ``Lambda_im``, ``B``, ``log_step``;
S4D's ``log_A_real``, ``A_imag``; S4's ``log_Lambda_real``, ``Lambda_imag``, ``P``) get Adam at
``ssm_lr`` without weight decay, as the S4 and S5 reference code train them; everything else gets AdamW at ``lr`` with weight
decay. Both follow linear warmup then cosine decay to ``min_lr_ratio`` times their peak.
"""

import re
from collections.abc import Sequence

import jax
import optax

SSM_GROUP, REGULAR_GROUP = "ssm", "regular"
# Full-path patterns (``blocks_0/mixer/Lambda_re``) of the parameters trained as SSM parameters.
DEFAULT_SSM_PARAM_PATTERNS = (
    r"(^|/)mixer/(Lambda_re|Lambda_im|B|log_step)$",  # S5
    r"(^|/)mixer/(log_A_real|A_imag|log_Lambda_real|Lambda_imag|P)$",  # S4D, S4 (B, log_step above)
)


def parameter_path(path) -> str:
    """``"blocks_0/mixer/B"`` from a ``jax.tree_util`` key path."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def parameter_groups(params, ssm_patterns: Sequence[str] = DEFAULT_SSM_PARAM_PATTERNS):
    """Tree like ``params`` with ``"ssm"`` where a full path matches one of ``ssm_patterns``, else ``"regular"``."""
    compiled = [re.compile(pattern) for pattern in ssm_patterns]

    def group(path, _):
        name = parameter_path(path)
        return SSM_GROUP if any(p.search(name) for p in compiled) else REGULAR_GROUP

    return jax.tree_util.tree_map_with_path(group, params)


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, cosine to ``min_lr_ratio * peak`` at ``total_steps``."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=peak * min_lr_ratio,
    )


def make_optimizer(
    *,
    lr: float,
    ssm_lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
    grad_clip_norm: float = 0.0,
    ssm_param_patterns: Sequence[str] = DEFAULT_SSM_PARAM_PATTERNS,
) -> optax.GradientTransformation:
    """Adam (``ssm_lr``, no decay) on SSM parameters, AdamW (``lr``, ``weight_decay``) on the rest.

    ``ssm_lr=0`` freezes the SSM parameters at their initial values (no optimiser state kept for
    them), as the PTD paper's robustness study trains its models.
    """
    ssm = optax.adam(warmup_cosine(ssm_lr, warmup_steps, total_steps, min_lr_ratio)) if ssm_lr > 0 else optax.set_to_zero()
    groups = {
        SSM_GROUP: ssm,
        REGULAR_GROUP: optax.adamw(
            warmup_cosine(lr, warmup_steps, total_steps, min_lr_ratio), weight_decay=weight_decay
        ),
    }
    tx = optax.multi_transform(groups, lambda params: parameter_groups(params, ssm_param_patterns))
    if grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx

"""The S5 authors' layer (``lindermanlab/S5``, ``s5/ssm.py:S5SSM``) beside jaxattn's ``S5`` with the
same parameters: the loader of their checkout and the pair of layers that
:mod:`experiments.bench_s5_authors` compares (no flags here, so that tests can import it).

jaxattn's ``S5`` stores exactly their leaves (``Lambda_re``, ``Lambda_im``, ``B [P, H, 2]``,
``C1``/``C2 [H, P, 2]``, ``D``, ``log_step [P, 1]``), so jaxattn's initial parameters are applied to
both. The configuration is theirs for LRA: conjugate symmetry, ``J`` HiPPO-N blocks, zero-order
hold, ``C_init`` truncated standard normal, bidirectional. Their layer maps one ``[L, H]`` sequence,
so it is ``jax.vmap``-ed over the batch as their ``BatchStackedModel`` does.
"""

import importlib
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn import S5
from jaxattn.nn.hippo import block_diagonal_hippo


def load_authors_ssm(s5_repo):
    """Their ``S5SSM`` class, imported from the checkout at ``s5_repo``."""
    if not s5_repo or not os.path.isfile(os.path.join(s5_repo, "s5", "ssm.py")):
        raise FileNotFoundError(
            f"--s5_repo={s5_repo!r} is not a checkout of github.com/lindermanlab/S5 (no s5/ssm.py there): "
            "clone it and pass its path, e.g. --s5_repo=/path/to/S5"
        )
    # Their class annotations name jnp.DeviceArray, which jax removed (jax.Array replaced it).
    if not hasattr(jnp, "DeviceArray"):
        jnp.DeviceArray = jax.Array
    sys.path.insert(0, os.path.abspath(s5_repo))
    try:
        return importlib.import_module("s5.ssm").S5SSM
    finally:
        sys.path.pop(0)


def parse_shape(text: str) -> dict:
    length, features, state_size, blocks, batch = (int(v) for v in text.lower().split("x"))
    return dict(length=length, features=features, state_size=state_size, blocks=blocks, batch=batch)


def build_pair(authors_ssm, *, features, state_size, blocks, seed=0):
    """``(ours, theirs, params)``: the two layers as functions ``(params, x [B, L, H]) -> [B, L, H]``
    and jaxattn's initial parameters (the tree both take)."""
    ours = S5(state_size=state_size, blocks=blocks, conj_sym=True, discretization="zoh", causal=False,
              C_init="trunc_standard_normal")
    params = nn.unbox(ours.init(jax.random.key(seed), jnp.zeros((1, 2, features))))["params"]
    lam, v, v_inv = block_diagonal_hippo(state_size, blocks, conj_sym=True)
    theirs = authors_ssm(
        Lambda_re_init=jnp.asarray(lam.real, jnp.float32), Lambda_im_init=jnp.asarray(lam.imag, jnp.float32),
        V=jnp.asarray(v, jnp.complex64), Vinv=jnp.asarray(v_inv, jnp.complex64), H=features, P=state_size // 2,
        C_init="trunc_standard_normal", discretization="zoh", dt_min=1e-3, dt_max=1e-1, conj_sym=True,
        clip_eigs=False, bidirectional=True,
    )

    def apply_ours(p, x):
        return ours.apply({"params": p}, x)

    def apply_theirs(p, x):
        return jax.vmap(lambda u: theirs.apply({"params": p}, u))(x)

    return apply_ours, apply_theirs, params


def forward_and_gradient(apply):
    """Jitted ``(params, x, w) -> (sum(apply(params, x) * w), (d params, d x))``."""
    return jax.jit(jax.value_and_grad(lambda p, x, w: jnp.sum(apply(p, x) * w), argnums=(0, 1)))


def max_abs_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

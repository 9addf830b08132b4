"""The parameters of a per-feature diagonal state space layer (S4D, and S4's diagonal part).

Each of the H features has its own P modes: ``A`` stored as ``log(-Re A)`` and ``Im A`` ``[H, P]``
(so ``Re A`` stays negative, the system stable, whatever the optimiser does), complex vectors as
``[H, P, 2]`` (real, imaginary), ``C`` (and ``C_reverse`` when not causal) complex normal, ``D``
``[H]`` and ``log_step [H]`` log-uniform in ``[log dt_min, log dt_max]``, every initial value the
same for all features.

See docs/ssm.md#s4d.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.nn.s5 import log_step_init

_AXES = ("embed", "ssm_state")


def _constant(value):
    return lambda key, shape: jnp.broadcast_to(jnp.asarray(value, jnp.float32), shape)


def _complex_normal(key, shape):
    return jax.random.normal(key, shape) * np.sqrt(0.5)  # variance 1/2 per part


def _as_complex(pairs: jax.Array) -> jax.Array:
    return pairs[..., 0] + 1j * pairs[..., 1]


def per_feature_ssm(module: nn.Module, features: int, lam0: np.ndarray, vectors: dict, *, a_names: tuple[str, str],
                    causal: bool, dt_min: float, dt_max: float):
    """Creates (at init) or reads ``module``'s parameters.

    Args:
      lam0: the initial ``A`` ``[P]`` complex; ``a_names``: the names of ``log(-Re A)`` and ``Im A``.
      vectors: name -> initial complex ``[P]`` (e.g. ``B``, S4's ``P``).

    Returns:
      ``(A [H, P], {name: [H, P]}, [C, (C_reverse)] each [H, P], step [H], D [H])``, complex where complex.
    """
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"{type(module).__name__}: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    shape = (features, lam0.shape[0])
    param = lambda name, init, shape, axes: module.param(name, nn.with_logical_partitioning(init, axes), shape)  # noqa: E731
    log_a_real = param(a_names[0], _constant(np.log(-lam0.real)), shape, _AXES)
    a_imag = param(a_names[1], _constant(lam0.imag), shape, _AXES)
    pairs = {name: param(name, _constant(np.stack([value.real, value.imag], -1)), (*shape, 2), (*_AXES, None))
             for name, value in vectors.items()}
    c_names = ("C",) if causal else ("C", "C_reverse")
    cs = [param(name, _complex_normal, (*shape, 2), (*_AXES, None)) for name in c_names]
    d = param("D", nn.initializers.normal(1.0), (features,), ("embed",))
    log_step = param("log_step", log_step_init(dt_min, dt_max), (features,), ("embed",))
    a = -jnp.exp(log_a_real) + 1j * a_imag
    return a, {name: _as_complex(p) for name, p in pairs.items()}, [_as_complex(c) for c in cs], jnp.exp(log_step), d

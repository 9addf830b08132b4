"""Test-time sinusoidal noise on the inputs of the SSM layers: the PTD paper's robustness protocol.

Yu et al. (perturb-then-diagonalise) test robustness by adding, inside every SSM layer and only at
test time, one cosine in the layer's own continuous time to the layer's input ``u [B, L, H]``:

    u~[b, k, h] = u[b, k, h] + amplitude * U[b, h] * cos(omega * k * dt_h),    U ~ Uniform(0, 1),

where ``dt_h`` is the step size of feature ``h`` (S4, S4D: one per feature), ``omega`` an angular
frequency (325.4 in the paper, near a spike of S4D-LegS's transfer function) and ``amplitude``
0.1. S5 has one step size per state, not per feature; its layers use one clock, the geometric
mean of their ``P`` step sizes (the paper has no S5 protocol; this is ours).

``with ssm_input_noise(omega, amplitude, seed): model.apply(...)`` applies it to every S4, S4D and
S5 layer traced inside the block (Flax method interception; no module changes). ``U`` comes from a
key fixed by ``seed`` and the layer's path, so the same call sees the same draws. The noise enters
the mixer's input, so the skip term ``D u`` sees it too (the paper's layer has no ``D``).

See docs/ssm.md#robustness-to-noise-inside-the-layers.
"""

from __future__ import annotations

import contextlib
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.s4 import S4
from jaxattn.nn.s4d import S4D
from jaxattn.nn.s5 import S5

NOISY_LAYERS = (S4, S4D, S5)
PAPER_OMEGA = 325.4
PAPER_AMPLITUDE = 0.1


def cosine_noise(x: jax.Array, step: jax.Array, omega: float, amplitude: float, key: jax.Array) -> jax.Array:
    """``x [B, L, H]`` plus ``amplitude * U[b, h] * cos(omega * k * step_h)``; ``step``: ``[H]`` or scalar."""
    batch, length, features = x.shape
    time = jnp.arange(length, dtype=jnp.float32)[:, None] * jnp.broadcast_to(step, (features,))[None, :]  # [L, H]
    scale = amplitude * jax.random.uniform(key, (batch, 1, features))
    return x + (scale * jnp.cos(omega * time)[None]).astype(x.dtype)


def layer_step(module: nn.Module) -> jax.Array:
    """The clock of a bound SSM layer: ``dt [H]`` for S4 and S4D, S5's geometric-mean scalar step."""
    log_step = nn.unbox(module.get_variable("params", "log_step"))
    if isinstance(module, S5):
        return module.step_rescale * jnp.exp(jnp.mean(log_step))
    return jnp.exp(log_step)


@contextlib.contextmanager
def ssm_input_noise(omega: float, amplitude: float, seed: int = 0):
    """Within the block, every S4 / S4D / S5 layer's ``__call__`` sees its input plus `cosine_noise`."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name != "__call__" or not isinstance(module, NOISY_LAYERS) or amplitude == 0
                or module.is_initializing()):  # initialisation has no step sizes yet, and needs no noise
            return next_fun(*args, **kwargs)
        x, *rest = args
        path = "/".join(module.scope.path)
        key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(path.encode()))
        return next_fun(cosine_noise(x, layer_step(module), omega, amplitude, key), *rest, **kwargs)

    with nn.intercept_methods(interceptor):
        yield

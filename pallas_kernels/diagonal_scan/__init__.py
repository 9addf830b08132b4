"""Diagonal linear recurrence ``h_t = a_t h_{t-1} + b_t`` as Pallas kernels with a ``custom_vjp``.

Real (fp32, bf16, fp16) or complex64, split into real and imaginary fp32 parts. Real inputs reach
the kernels in their own dtype: the kernels load half-precision blocks, carry the state in fp32 and
store ``h`` in the input dtype, so a bf16 scan moves half the bytes of an fp32 one and no conversion
pass over ``[B, T, F]`` runs around the kernel (on an H100 those two extra passes made the bf16
kernel 1.5-2.1x slower than XLA). The final state leaves the kernel in fp32 and is rounded to the
input dtype here (a ``[B, F]`` conversion).

The backward is the same scan run the other way: with ``g_t`` the total gradient of ``h_t``,

    ``g_t = a_{t+1} g_{t+1} + dh_t`` (``g_{T-1} = dh_{T-1} + dh_last``),
    ``db_t = g_t``,  ``da_t = g_t h_{t-1}``,  ``dh0 = a_0 g_0``

(JAX's transpose convention: no complex conjugates), mirrored for ``reverse``. Tile sizes:
:class:`~pallas_kernels.diagonal_scan.block_sizes.ScanBlockSizes`.
"""

import functools
import math

import jax
import jax.numpy as jnp

from pallas_kernels.block_sizes import round_up
from pallas_kernels.diagonal_scan import tpu, triton
from pallas_kernels.diagonal_scan.block_sizes import ScanBlockSizes
from pallas_kernels.platform import Interpret, run_on_platform

SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64)


def _parts(x: jax.Array) -> tuple:
    """``(x,)`` as it is when real (the kernels widen it), ``(re, im)`` fp32 when complex."""
    if jnp.iscomplexobj(x):
        return (jnp.real(x).astype(jnp.float32), jnp.imag(x).astype(jnp.float32))
    return (x,)


def _merge(parts: tuple, dtype) -> jax.Array:
    return (parts[0] + 1j * parts[1] if len(parts) == 2 else parts[0]).astype(dtype)


def _kernel_scan(a, b, h0, reverse, sizes, interpret):
    """``a, b [B, T, F]`` (F a multiple of both feature tiles; T a multiple of the TPU time tile when
    longer), ``h0 [B, F]``; ``sizes``: TPU's and Triton's :class:`ScanBlockSizes`."""

    def on(backend, block_sizes):
        return lambda a, b, h0, interpret: backend.scan(a, b, h0, reverse=reverse, block_sizes=block_sizes,
                                                        interpret=interpret)

    tpu_sizes, triton_sizes = sizes
    h0_rows = tuple(p[:, None] for p in _parts(h0))
    h, last = run_on_platform(_parts(a), _parts(b), h0_rows, tpu=on(tpu, tpu_sizes), gpu=on(triton, triton_sizes),
                              interpret=interpret)
    return _merge(h, b.dtype), _merge(tuple(p[:, 0] for p in last), b.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _scan(a, b, h0, reverse, sizes, interpret):
    return _kernel_scan(a, b, h0, reverse, sizes, interpret)


def _scan_forward(a, b, h0, reverse, sizes, interpret):
    h, last = _kernel_scan(a, b, h0, reverse, sizes, interpret)
    return (h, last), (a, h, h0)


def _scan_backward(reverse, sizes, interpret, residuals, cotangents):
    a, h, h0 = residuals
    d_h, d_last = cotangents
    ones = jnp.ones_like(a[:, :1])
    if not reverse:
        transitions = jnp.concatenate([a[:, 1:], ones], axis=1)  # a_{t+1}
        previous = jnp.concatenate([h0[:, None], h[:, :-1]], axis=1)  # h_{t-1}
        first = 0
    else:
        transitions = jnp.concatenate([ones, a[:, :-1]], axis=1)
        previous = jnp.concatenate([h[:, 1:], h0[:, None]], axis=1)
        first = -1
    g, _ = _kernel_scan(transitions, d_h.astype(a.dtype), d_last.astype(a.dtype), not reverse, sizes, interpret)
    return (g * previous).astype(a.dtype), g.astype(a.dtype), (a[:, first] * g[:, first]).astype(h0.dtype)


_scan.defvjp(_scan_forward, _scan_backward)


def diagonal_scan(a: jax.Array, b: jax.Array, h0: jax.Array, *, reverse: bool = False, block_sizes=None,
                  interpret: Interpret = None) -> tuple[jax.Array, jax.Array]:
    """``(h [B, T, F], h_last [B, F])`` of ``h_t = a_t h_{t-1} + b_t`` (``h_{t+1}`` when ``reverse``).

    ``a`` and ``b`` are ``[B, T, F]`` of one dtype among :data:`SUPPORTED_DTYPES`, ``h0`` ``[B, F]``.
    Features are padded to a multiple of both platforms' feature tiles (128 by default) and time to
    the TPU tile with ``a = 1, b = 0``, which leaves every state unchanged in either direction.
    ``block_sizes``: a :class:`ScanBlockSizes`, one per platform, or None (the defaults);
    ``interpret``: see :func:`pallas_kernels.platform.interpreter_mode`.
    """
    length, features = b.shape[1:]
    block_sizes = ScanBlockSizes.tuned(block_sizes, "diagonal_scan", b.dtype, batch=b.shape[0], length=length,
                                       features=features)
    sizes = ScanBlockSizes.for_each_platform(block_sizes, b.dtype)
    tpu_sizes, triton_sizes = sizes
    pad_features = round_up(features, math.lcm(tpu_sizes.feature_tile, triton_sizes.feature_tile)) - features
    pad_time = -length % tpu_sizes.time_tile if length > tpu_sizes.time_tile else 0
    pad = ((0, 0), (0, pad_time), (0, pad_features))
    a = jnp.pad(a, pad, constant_values=1)
    b = jnp.pad(b, pad)
    h, last = _scan(a, b, jnp.pad(h0, ((0, 0), (0, pad_features))), reverse, sizes, interpret)
    return h[:, :length, :features], last[:, :features]

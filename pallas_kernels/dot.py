"""The matrix product every kernel's block math uses.

Why fp32 products run at full precision: docs/ops.md#numerics-conventions.
"""

import contextlib
import contextvars
from typing import Optional

import jax
import jax.numpy as jnp

_FP32_ALGORITHM: contextvars.ContextVar[Optional[jax.lax.DotAlgorithmPreset]] = contextvars.ContextVar(
    "fp32_dot_algorithm", default=None
)


@contextlib.contextmanager
def fp32_algorithm(algorithm: Optional[jax.lax.DotAlgorithmPreset]):
    """Products of two fp32 blocks traced inside use ``algorithm`` (None: ``Precision.HIGHEST``).

    A backend wraps its kernel's tracing in this to pick how fp32 products run on its hardware."""
    token = _FP32_ALGORITHM.set(algorithm)
    try:
        yield
    finally:
        _FP32_ALGORITHM.reset(token)


def dot(a: jax.Array, b: jax.Array, contract: tuple[int, int] = (1, 0)) -> jax.Array:
    """``a @ b`` of 2-D blocks contracting ``a``'s axis ``contract[0]`` with ``b``'s ``contract[1]``, fp32 out.

    fp32 operands use full fp32 precision (``HIGHEST``) unless the kernel's backend chose another
    algorithm of about fp32 accuracy (:func:`fp32_algorithm`), so kernels match the reference to 1e-4.
    """
    precision = None
    if a.dtype == jnp.float32 and b.dtype == jnp.float32:
        precision = _FP32_ALGORITHM.get() or jax.lax.Precision.HIGHEST
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)

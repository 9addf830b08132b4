"""The matrix product every kernel's block math uses."""

import jax
import jax.numpy as jnp


def dot(a: jax.Array, b: jax.Array, contract: tuple[int, int] = (1, 0)) -> jax.Array:
    """``a @ b`` of 2-D blocks contracting ``a``'s axis ``contract[0]`` with ``b``'s ``contract[1]``, fp32 out.

    fp32 operands use full fp32 precision (no TF32 on GPU), so kernels match the reference to 1e-4.
    """
    precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 and b.dtype == jnp.float32 else None
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)

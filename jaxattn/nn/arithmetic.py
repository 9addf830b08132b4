"""Which arithmetic a model's matrix products use: exact, L-Mul, or fp8 operands.

A model is built from ordinary Flax modules; ``with product_arithmetic(Arithmetic(...)):`` around
``init``/``apply`` (or around tracing a jitted step) switches every ``Dense`` made by
:func:`jaxattn.nn.blocks.dense` (``dense=True``) and the attention products of the attention mixers
(``attention=True``: ``q k^T`` and ``P v`` of softmax attention, every product of linear attention)
to that arithmetic, in the way ``flax.linen.logical_axis_rules`` sets sharding rules: read when the
computation is traced.

  * ``kind="lmul"``: L-Matmul (:func:`jaxattn.ops.lmul_dot_general`) with
    ``mantissa_bits``, ``semantics``, ``offset`` and ``backward``.
  * ``kind="fp8_e4m3"`` / ``"fp8_e5m2"``: operands rounded to that format (saturating), exact
    products, fp32 accumulation; straight-through gradients.

See docs/lmul.md#models-in-another-arithmetic.
"""

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Optional

import jax
import jax.numpy as jnp

from jaxattn.ops import lmul_dot_general

KINDS = ("lmul", "fp8_e4m3", "fp8_e5m2")
_FP8 = {"fp8_e4m3": jnp.float8_e4m3fn, "fp8_e5m2": jnp.float8_e5m2}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _straight_through_round(x: jax.Array, dtype) -> jax.Array:
    """``x`` rounded to ``dtype`` (saturating) and back; the gradient passes straight through."""
    largest = float(jnp.finfo(dtype).max)
    return jnp.clip(x, -largest, largest).astype(dtype).astype(x.dtype)


_straight_through_round.defvjp(lambda x, dtype: (_straight_through_round(x, dtype), None), lambda dtype, _, g: (g,))


def fp8_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, fp8_dtype,
                    out_sharding=None):
    """``lax.dot_general`` of operands rounded to ``fp8_dtype``, products and sums in fp32."""
    del precision, out_sharding
    out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    lhs, rhs = (_straight_through_round(a.astype(jnp.float32), fp8_dtype) for a in (lhs, rhs))
    out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=jax.lax.Precision.HIGHEST,
                              preferred_element_type=jnp.float32)
    return out.astype(out_dtype)


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """A product arithmetic and where it applies (see the module docstring)."""

    kind: str = "lmul"
    mantissa_bits: int = 3
    semantics: str = "bitwise"
    offset: str = "paper"
    backward: str = "straight_through"
    dense: bool = True
    attention: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Arithmetic: kind={self.kind!r} is not one of {KINDS}")

    def dot_general(self) -> Callable:
        if self.kind in _FP8:
            return functools.partial(fp8_dot_general, fp8_dtype=_FP8[self.kind])
        return functools.partial(lmul_dot_general, mantissa_bits=self.mantissa_bits, semantics=self.semantics,
                                 offset=self.offset, backward=self.backward)


_CURRENT: contextvars.ContextVar[Optional[Arithmetic]] = contextvars.ContextVar("jaxattn_arithmetic", default=None)


@contextlib.contextmanager
def product_arithmetic(arithmetic: Optional[Arithmetic]) -> Iterator[None]:
    """Within the block, modules trace their products in ``arithmetic`` (None: exact)."""
    token = _CURRENT.set(arithmetic)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def dense_dot_general() -> Optional[Callable]:
    """The ``dot_general`` for Dense layers now, or None (exact)."""
    arithmetic = _CURRENT.get()
    return arithmetic.dot_general() if arithmetic is not None and arithmetic.dense else None


def attention_dot_general() -> Optional[Callable]:
    """The ``dot_general`` for attention products now, or None (exact, and any kernel)."""
    arithmetic = _CURRENT.get()
    return arithmetic.dot_general() if arithmetic is not None and arithmetic.attention else None

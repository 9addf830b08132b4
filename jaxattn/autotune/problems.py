"""The ops a search can tune: how to build their inputs for a shape and how to call them.

One :class:`Shape` ``(batch, length, heads, head_dim)`` describes every problem; each op reads it
as the layer that calls it would:

| op | inputs |
|---|---|
| ``softmax_attention`` | ``q, k, v [B, T, H, D]``, causal |
| ``tensor_attention`` | ``q, k1, k2, v1, v2 [B, T, H, D]``, causal |
| ``linear_attention`` | ``q, k, v [B, T, H, D]``, log gates ``g [B, T, H]`` |
| ``delta_rule`` | ``q``, unit-norm ``k``, ``v [B, T, H, D]``, ``beta [B, T, H]``, log gates ``g`` |
| ``diagonal_scan`` | ``a`` in (0.5, 1), ``b [B, T, H * D]`` |
| ``lmul_dot_general`` | ``[B * H, T, D] x [B * H, D, T]`` (attention logits) |

``options`` are passed to every call of the op (e.g. ``chunk_size=32``, ``causal=False``).

See docs/autotune.md#what-is-searched.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxattn.ops.delta_rule import delta_rule
from jaxattn.ops.diagonal_scan import diagonal_scan
from jaxattn.ops.linear_attention import linear_attention
from jaxattn.ops.lmul_matmul import lmul_dot_general
from jaxattn.ops.softmax_attention import softmax_attention
from jaxattn.ops.tensor_attention import tensor_attention
from pallas_kernels.block_sizes import KernelBlockSizes
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.diagonal_scan.block_sizes import ScanBlockSizes
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes
from pallas_kernels.lmul_matmul import LMulBlockSizes
from pallas_kernels.tensor_attention.block_sizes import TensorBlockSizes


class Shape(NamedTuple):
    """The problem size every op reads in its own way (module docstring)."""

    batch: int
    length: int
    heads: int
    head_dim: int


@dataclasses.dataclass(frozen=True)
class TunableOp:
    """An op with a Pallas path, as a search sees it.

    ``make_inputs(key, shape, dtype) -> arrays``; ``call(arrays, **kwargs) -> outputs`` calls the op
    with ``kwargs`` (``impl``, ``block_sizes``, ``interpret`` and the search's ``options``);
    ``differentiable``: whether its backward runs the kernels too (then a search may time and check
    forward+backward).
    """

    name: str
    family: type[KernelBlockSizes]
    make_inputs: Callable[[jax.Array, Shape, Any], tuple]
    call: Callable[..., Any]
    differentiable: bool = True


def _normal(key, shape, dtype, scale=1.0):
    return (scale * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def _log_gates(key, s: Shape):
    return jax.nn.log_sigmoid(4.0 + jax.random.normal(key, (s.batch, s.length, s.heads), jnp.float32))


def _attention_inputs(count: int) -> Callable:
    def make(key, s: Shape, dtype):
        shape = (s.batch, s.length, s.heads, s.head_dim)
        return tuple(_normal(k, shape, dtype) for k in jax.random.split(key, count))

    return make


def _linear_attention_inputs(key, s: Shape, dtype):
    kq, kk, kv, kg = jax.random.split(key, 4)
    shape = (s.batch, s.length, s.heads, s.head_dim)
    return (_normal(kq, shape, dtype, s.head_dim ** -0.5), _normal(kk, shape, dtype, s.head_dim ** -0.5),
            _normal(kv, shape, dtype), _log_gates(kg, s))


def _delta_rule_inputs(key, s: Shape, dtype):
    kq, kk, kv, kb, kg = jax.random.split(key, 5)
    shape = (s.batch, s.length, s.heads, s.head_dim)
    k = jax.random.normal(kk, shape, jnp.float32)
    k = (k / jnp.linalg.norm(k, axis=-1, keepdims=True)).astype(dtype)
    beta = jax.nn.sigmoid(jax.random.normal(kb, shape[:3], jnp.float32)).astype(dtype)
    return _normal(kq, shape, dtype), k, _normal(kv, shape, dtype), beta, _log_gates(kg, s)


def _scan_inputs(key, s: Shape, dtype):
    ka, kb = jax.random.split(key)
    shape = (s.batch, s.length, s.heads * s.head_dim)
    return (jax.random.uniform(ka, shape, jnp.float32, 0.5, 1.0).astype(dtype), _normal(kb, shape, dtype))


def _lmul_inputs(key, s: Shape, dtype):
    ka, kb = jax.random.split(key)
    groups = s.batch * s.heads
    return (_normal(ka, (groups, s.length, s.head_dim), dtype), _normal(kb, (groups, s.head_dim, s.length), dtype))


_LOGITS = (((2,), (1,)), ((0,), (0,)))  # [G, T, D] x [G, D, T] -> [G, T, T]

OPS: Mapping[str, TunableOp] = {op.name: op for op in (
    TunableOp("softmax_attention", FlashBlockSizes, _attention_inputs(3),
              lambda arrays, **kw: softmax_attention(*arrays, **kw)),
    TunableOp("tensor_attention", TensorBlockSizes, _attention_inputs(5),
              lambda arrays, **kw: tensor_attention(*arrays, **kw)),
    TunableOp("linear_attention", ChunkedBlockSizes, _linear_attention_inputs,
              lambda arrays, **kw: linear_attention(*arrays[:3], g=arrays[3], **kw)),
    TunableOp("delta_rule", ChunkedBlockSizes, _delta_rule_inputs,
              lambda arrays, **kw: delta_rule(*arrays[:4], g=arrays[4], **kw)),
    TunableOp("diagonal_scan", ScanBlockSizes, _scan_inputs, lambda arrays, **kw: diagonal_scan(*arrays, **kw)),
    # The L-Mul backward is a straight-through product, not the kernel: forward only.
    TunableOp("lmul_dot_general", LMulBlockSizes, _lmul_inputs,
              lambda arrays, **kw: lmul_dot_general(*arrays, _LOGITS, **kw), differentiable=False),
)}


def tunable_op(op: Any) -> TunableOp:
    """``op`` itself when a :class:`TunableOp`, else the one of that name (``ValueError`` naming the choices)."""
    if isinstance(op, TunableOp):
        return op
    if op not in OPS:
        raise ValueError(f"autotune: `op` must be one of {sorted(OPS)} or a TunableOp, got {op!r}")
    return OPS[op]

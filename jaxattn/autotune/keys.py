"""What a tuned entry is keyed by: the device kind, the op, the operand dtype and the shape bucket.

A kernel entry point asks for tuned sizes with its exact extents (``KernelBlockSizes.tuned``), e.g.
flash attention with ``queries=1000, keys=1000, head_dim=64, value_dim=64, batch_heads=32``. The
bucket rounds every extent up to a power of two except the widths in :data:`EXACT_SIZES` (head
dims and the chunk size change the kernel's code, not only its trip counts), so that one measured
shape serves the lengths around it::

    bucket({"queries": 1000, "keys": 1000, "head_dim": 64, "value_dim": 64, "batch_heads": 24})
    # "batch_heads=32,head_dim=64,keys=1024,queries=1024,value_dim=64"
    entry_key("NVIDIA H100 80GB HBM3", "softmax_attention", jnp.bfloat16, sizes)
    # "NVIDIA H100 80GB HBM3 | softmax_attention | bfloat16 | batch_heads=32,head_dim=64,..."

The device kind is ``jax.devices()[0].device_kind`` (the default backend's first device), or the
one set by :func:`use_device_kind` (tests, or tuning for a kind this process does not see).

See docs/autotune.md#the-key.
"""

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp

# Extents kept exact in a bucket; every other extent is rounded up to a power of two.
EXACT_SIZES = frozenset({"head_dim", "value_dim", "chunk_size"})
KEY_SEPARATOR = " | "

_device_kind_override: Optional[str] = None


def device_kind() -> str:
    """The device kind entries are read and written for: the override of :func:`use_device_kind`, else
    ``jax.devices()[0].device_kind`` (e.g. ``"NVIDIA H100 80GB HBM3"``, ``"TPU v5 lite"``, ``"cpu"``)."""
    if _device_kind_override is not None:
        return _device_kind_override
    return jax.devices()[0].device_kind


@contextlib.contextmanager
def use_device_kind(kind: str) -> Iterator[None]:
    """Within the block, :func:`device_kind` is ``kind`` (nesting restores the outer one)."""
    global _device_kind_override
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"use_device_kind: `kind` must be a non-empty str, got {kind!r}")
    previous, _device_kind_override = _device_kind_override, kind
    try:
        yield
    finally:
        _device_kind_override = previous


def next_power_of_two(n: int) -> int:
    """The least power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def bucket(sizes: Mapping[str, int]) -> str:
    """``"name=value,..."`` sorted by name: :data:`EXACT_SIZES` exact, the others rounded up to a power of two."""
    rounded = {name: int(n) if name in EXACT_SIZES else next_power_of_two(n) for name, n in sizes.items()}
    return ",".join(f"{name}={rounded[name]}" for name in sorted(rounded))


def dtype_name(dtype: Any) -> str:
    """``"float32"``, ``"bfloat16"``, ...: the dtype as keys spell it."""
    return jnp.dtype(dtype).name


def entry_key(kind: str, op: str, dtype: Any, sizes: Mapping[str, int]) -> str:
    """``"{device kind} | {op} | {dtype} | {bucket}"``: the key of a cache entry."""
    return KEY_SEPARATOR.join((kind, op, dtype_name(dtype), bucket(sizes)))

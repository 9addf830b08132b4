"""Causal softmax attention kernels beside ours: JAX's own Pallas kernels, Tokamax, and our flash kernels with
the GPU kernel family fixed per row.

Every function takes and returns ``[B, T, H, D]`` (the op contract's layout, which all of these kernels
share), with the scale ``D^{-1/2}``:

- ``jax_mgpu``: ``jax.experimental.pallas.ops.gpu.attention_mgpu.attention`` (Pallas Mosaic GPU, Hopper,
  fp16/bf16, ``D`` a multiple of 64). Its backward raises for causal attention, so its rows are forward only.
- ``jax_triton``: ``jax.experimental.pallas.ops.gpu.attention.mha`` (Pallas Triton, ``custom_vjp``),
  forward and backward.
- ``tokamax`` / ``tokamax_triton``: ``tokamax.dot_product_attention(..., implementation="mosaic" | "triton")``
  (``pip install tokamax``), forward and backward.
- ``pallas_mosaic`` / ``pallas_triton``: our ``softmax_attention(impl="pallas")`` with
  ``JAXATTN_GPU_KERNELS`` set while the row is traced (:func:`gpu_kernel_family`), so one run times both
  families of our kernels.
"""

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import jax

from pallas_kernels.platform import GPU_KERNELS_ENV, MOSAIC_GPU_MIN_CAPABILITY, device_compute_capability

# Our flash kernels with a fixed GPU family: impl name -> the value of JAXATTN_GPU_KERNELS.
KERNEL_FAMILIES = {"pallas_mosaic": "mosaic", "pallas_triton": "triton"}
TOKAMAX_IMPLEMENTATIONS = {"tokamax": "mosaic", "tokamax_triton": "triton"}
# Kernels whose backward the benchmark does not time (jax_mgpu's causal backward is not implemented).
FORWARD_ONLY = ("jax_mgpu",)
HOPPER_ONLY = ("pallas_mosaic", "jax_mgpu", "tokamax")
IMPLS = (*KERNEL_FAMILIES, "jax_mgpu", "jax_triton", *TOKAMAX_IMPLEMENTATIONS)


def skip_reason(impl: str, dtype: str, head_dim: int) -> str:
    """Why ``impl`` cannot run here on ``dtype`` inputs with heads of ``head_dim`` ("" when it can)."""
    if impl in TOKAMAX_IMPLEMENTATIONS and importlib.util.find_spec("tokamax") is None:
        return "needs tokamax (pip install tokamax)"
    capability = device_compute_capability()
    if capability is None or jax.devices()[0].platform != "gpu" or capability == 0.0:
        return "needs a CUDA GPU" + (" with compute capability >= 9.0 (Hopper)" if impl in HOPPER_ONLY else "")
    if impl in HOPPER_ONLY and capability < MOSAIC_GPU_MIN_CAPABILITY:
        return f"needs Hopper (compute capability >= 9.0), this GPU has {capability}"
    if impl in ("pallas_mosaic", "jax_mgpu") and (dtype == "float32" or head_dim % 64):
        # ours would silently run the Triton forward instead; JAX's raises
        return "the Mosaic GPU forward takes fp16/bf16 with D a multiple of 64"
    return ""


@contextlib.contextmanager
def gpu_kernel_family(impl: str) -> Iterator[None]:
    """Sets ``JAXATTN_GPU_KERNELS`` for ``impl`` (a :data:`KERNEL_FAMILIES` key; others: unchanged) while
    its row is traced, and clears JAX's trace caches first so the other family's trace of the same shapes
    is not reused."""
    family = KERNEL_FAMILIES.get(impl)
    if family is None:
        yield
        return
    previous = os.environ.get(GPU_KERNELS_ENV)
    jax.clear_caches()
    os.environ[GPU_KERNELS_ENV] = family
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(GPU_KERNELS_ENV, None)
        else:
            os.environ[GPU_KERNELS_ENV] = previous
        jax.clear_caches()


def jax_mgpu_attention(q, k, v):
    """JAX's Mosaic GPU flash attention (64-row query blocks, 128-key blocks, two pipelined stages)."""
    from jax.experimental.pallas.ops.gpu import attention_mgpu

    config = attention_mgpu.TuningConfig(block_q=64, block_kv=128, max_concurrent_steps=2, causal=True)
    # it applies no scale of its own: fold D^{-1/2} into q
    return attention_mgpu.attention(q * q.shape[-1] ** -0.5, k, v, config)


def jax_triton_attention(q, k, v):
    """JAX's Pallas Triton flash attention with its default blocks."""
    from jax.experimental.pallas.ops.gpu import attention

    return attention.mha(q, k, v, None, sm_scale=q.shape[-1] ** -0.5, causal=True)


def tokamax_attention(implementation: str):
    def run(q, k, v):
        import tokamax

        return tokamax.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)

    return run


def run(impl: str):
    """The function of ``impl`` (one of :data:`IMPLS` other than our families)."""
    if impl in TOKAMAX_IMPLEMENTATIONS:
        return tokamax_attention(TOKAMAX_IMPLEMENTATIONS[impl])
    return {"jax_mgpu": jax_mgpu_attention, "jax_triton": jax_triton_attention}[impl]

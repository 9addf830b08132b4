"""One kernel call that lowers for TPU, CUDA and CPU alike.

``jax.lax.platform_dependent`` picks the branch when the program is lowered, so the same traced
function can be lowered for ``tpu`` (Mosaic kernel), ``cuda`` (Triton kernel) or ``cpu``, where
the Pallas interpreter runs the Triton-backend kernel. ``JAXATTN_PALLAS_INTERPRET`` forces the
interpreter on every platform: ``=1`` or ``=gpu`` interprets the Triton-backend kernel, ``=tpu`` the
TPU kernel (to debug a kernel on an accelerator, or test the TPU kernel on CPU). Every kernel entry
point also takes ``interpret=`` (:func:`interpreter_mode`), which overrides the switch when not None.

Compiled Triton kernels multiply fp32 blocks as 3xTF32 (three tensor-core products of split
operands, about fp32 accuracy): Triton's IEEE fp32 product runs on the CUDA cores, and on an H100
the linear and flash attention forwards (D=64, T=4096) ran 23x and 40x slower with it
(results/bench_gpu_h100).
``JAXATTN_TRITON_FP32_DOT=ieee`` (or ``tf32``, one pass, as XLA's default) picks another.

Hopper GPUs: a kernel that has a Mosaic GPU version (``mosaic_gpu=`` of :func:`run_on_platform`)
runs it on CUDA when :func:`gpu_kernels` says ``"mosaic"``: the GPU has compute capability >= 9.0
(read from ``jax.devices()`` at trace time, since ``platform_dependent`` knows the platform only),
or ``JAXATTN_GPU_KERNELS=mosaic`` (``=triton`` forces the Triton kernels; lowering for ``cuda`` on a
machine without a GPU takes the Triton kernels unless told). ``interpret="mosaic_gpu"`` runs the
Mosaic GPU kernel in its interpreter.

See docs/ops.md#platform-selection-and-interpret-mode.
"""

import functools
import logging
import os
from collections.abc import Callable
from typing import Optional, Union

import jax

# A kernel call's ``interpret`` argument (see interpreter_mode).
Interpret = Optional[Union[bool, str]]
INTERPRET_ENV = "JAXATTN_PALLAS_INTERPRET"
TRITON_FP32_DOT_ENV = "JAXATTN_TRITON_FP32_DOT"
GPU_KERNELS_ENV = "JAXATTN_GPU_KERNELS"
_GPU_KERNEL_FAMILIES = ("mosaic", "triton")
# Mosaic GPU kernels use wgmma and TMA: Hopper (sm_90) and later.
MOSAIC_GPU_MIN_CAPABILITY = 9.0
_TRITON_FP32_DOTS = {
    "tf32x3": jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3,
    "ieee": None,  # Precision.HIGHEST, which Triton lowers to its IEEE fp32 product
    "tf32": jax.lax.DotAlgorithmPreset.TF32_TF32_F32,
}


def forced_interpreter() -> str:
    """``""`` (not forced), ``"gpu"`` or ``"tpu"``: which kernel ``JAXATTN_PALLAS_INTERPRET`` asks to interpret."""
    value = os.environ.get(INTERPRET_ENV, "").strip().lower()
    if value in ("", "0"):
        return ""
    if value in ("1", "gpu", "tpu"):
        return "tpu" if value == "tpu" else "gpu"
    raise ValueError(f"{INTERPRET_ENV}={value!r}: expected 0, 1, gpu or tpu")


def interpreter_mode(interpret: Interpret = None) -> str:
    """What a kernel call's ``interpret`` argument asks for: ``"gpu"`` or ``"tpu"`` (interpret that
    kernel on every platform), ``""`` (the interpreter only on platforms without kernels) or
    ``"never"``.

    ``None``: the environment switch (:func:`forced_interpreter`), else ``""``; ``True`` (or ``"gpu"``):
    the Triton-backend kernel; ``"tpu"``: the TPU kernel; ``False``: never interpret (lowering for a
    platform without kernels, e.g. ``cpu``, then fails).
    """
    if interpret is None:
        return forced_interpreter()
    if interpret is True or interpret == "gpu":
        return "gpu"
    if interpret is False:
        return "never"
    if interpret in ("tpu", "mosaic_gpu"):
        return interpret
    raise ValueError(f"`interpret` must be None, True, False, 'gpu', 'tpu' or 'mosaic_gpu', got {interpret!r}")


def triton_fp32_dot(interpret: bool):
    """The fp32 product algorithm of a Triton-backend kernel (None: ``HIGHEST``); the interpreter
    always uses ``HIGHEST``, which every XLA backend runs."""
    value = os.environ.get(TRITON_FP32_DOT_ENV, "tf32x3").strip().lower()
    if value not in _TRITON_FP32_DOTS:
        raise ValueError(f"{TRITON_FP32_DOT_ENV}={value!r}: expected one of {', '.join(_TRITON_FP32_DOTS)}")
    return None if interpret else _TRITON_FP32_DOTS[value]


@functools.cache
def _log_gpu_kernels(family: str, why: str) -> None:
    logging.getLogger(__name__).info("GPU kernels: %s (%s)", family, why)


def device_compute_capability() -> Optional[float]:
    """The CUDA compute capability of the first device when JAX's default backend is a GPU (0 for a
    GPU without one, e.g. ROCm's), else None."""
    if jax.default_backend() != "gpu":
        return None
    try:
        return float(jax.devices()[0].compute_capability)
    except (AttributeError, TypeError, ValueError):
        return 0.0


def gpu_kernels(capability: Optional[float] = None) -> str:
    """``"mosaic"`` or ``"triton"``: which kernels run on CUDA where both exist (logged once per answer).

    ``JAXATTN_GPU_KERNELS`` (``mosaic`` or ``triton``) decides when set; else ``"mosaic"`` when the
    compute capability (``capability``, or that of the first visible GPU when JAX's default backend
    is a GPU) is at least 9.0, else ``"triton"``.
    """
    value = os.environ.get(GPU_KERNELS_ENV, "").strip().lower()
    if value:
        if value not in _GPU_KERNEL_FAMILIES:
            raise ValueError(f"{GPU_KERNELS_ENV}={value!r}: expected one of {', '.join(_GPU_KERNEL_FAMILIES)}")
        _log_gpu_kernels(value, f"{GPU_KERNELS_ENV}={value}")
        return value
    capability = device_compute_capability() if capability is None else capability
    if capability is None:
        return "triton"  # no GPU here: lowering for cuda takes the kernels every GPU runs
    family = "mosaic" if capability >= MOSAIC_GPU_MIN_CAPABILITY else "triton"
    _log_gpu_kernels(family, f"compute capability {capability}")
    return family


def run_on_platform(*args, tpu: Callable, gpu: Callable, interpret: Interpret = None,
                    mosaic_gpu: Optional[Callable] = None):
    """``tpu(*args, interpret=False)`` on TPU, ``gpu(*args, interpret=False)`` on CUDA, and
    ``gpu(*args, interpret=True)`` on any other platform; ``interpret`` (:func:`interpreter_mode`)
    forces one kernel in the interpreter everywhere, or (``False``) leaves other platforms without one.
    ``mosaic_gpu`` (the Mosaic GPU kernel, where it takes these operands) replaces ``gpu`` on CUDA when
    :func:`gpu_kernels` says ``"mosaic"``, and runs in its interpreter for ``interpret="mosaic_gpu"``."""
    mode = interpreter_mode(interpret)
    if mode == "mosaic_gpu":
        if mosaic_gpu is None:
            raise ValueError("interpret='mosaic_gpu': this call has no Mosaic GPU kernel (or not for these operands)")
        return functools.partial(mosaic_gpu, interpret=True)(*args)
    if mode in ("gpu", "tpu"):
        return functools.partial(tpu if mode == "tpu" else gpu, interpret=True)(*args)
    cuda = mosaic_gpu if mosaic_gpu is not None and gpu_kernels() == "mosaic" else gpu
    branches = dict(tpu=functools.partial(tpu, interpret=False), cuda=functools.partial(cuda, interpret=False))
    if mode != "never":
        branches["default"] = functools.partial(gpu, interpret=True)
    return jax.lax.platform_dependent(*args, **branches)

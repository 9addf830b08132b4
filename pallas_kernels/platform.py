"""One kernel call that lowers for TPU, CUDA and CPU alike.

``jax.lax.platform_dependent`` picks the branch when the program is lowered, so the same traced
function can be lowered for ``tpu`` (Mosaic kernel), ``cuda`` (Triton kernel) or ``cpu``, where
the Pallas interpreter runs the Triton-backend kernel. ``JAXATTN_PALLAS_INTERPRET`` forces the
interpreter on every platform: ``=1`` or ``=gpu`` interprets the Triton-backend kernel, ``=tpu`` the
TPU kernel (to debug a kernel on an accelerator, or test the TPU kernel on CPU).

Compiled Triton kernels multiply fp32 blocks as 3xTF32 (three tensor-core products of split
operands, about fp32 accuracy): Triton's IEEE fp32 product runs on the CUDA cores, and on an H100
the linear and flash attention forwards (D=64, T=4096) ran 23x and 40x slower with it
(results/bench_gpu_h100).
``JAXATTN_TRITON_FP32_DOT=ieee`` (or ``tf32``, one pass, as XLA's default) picks another.

See docs/ops.md#platform-selection-and-interpret-mode.
"""

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

INTERPRET_ENV = "JAXATTN_PALLAS_INTERPRET"
TRITON_FP32_DOT_ENV = "JAXATTN_TRITON_FP32_DOT"
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


def triton_fp32_dot(interpret: bool):
    """The fp32 product algorithm of a Triton-backend kernel (None: ``HIGHEST``); the interpreter
    always uses ``HIGHEST``, which every XLA backend runs."""
    value = os.environ.get(TRITON_FP32_DOT_ENV, "tf32x3").strip().lower()
    if value not in _TRITON_FP32_DOTS:
        raise ValueError(f"{TRITON_FP32_DOT_ENV}={value!r}: expected one of {', '.join(_TRITON_FP32_DOTS)}")
    return None if interpret else _TRITON_FP32_DOTS[value]


def wide_fp32(arrays, width: int = 64) -> bool:
    """Whether any of ``arrays`` is fp32 with a last axis wider than ``width``: its blocks, split into
    3xTF32 operands and multi-buffered, overflow an H100's 227 KiB of shared memory at 64 rows."""
    return any(a.dtype == jnp.float32 and a.shape[-1] > width for a in arrays)


def run_on_platform(*args, tpu: Callable, gpu: Callable):
    """``tpu(*args, interpret=False)`` on TPU, ``gpu(*args, interpret=False)`` on CUDA, and
    ``gpu(*args, interpret=True)`` on any other platform."""
    interpreted = functools.partial(gpu, interpret=True)
    forced = forced_interpreter()
    if forced:
        return functools.partial(tpu if forced == "tpu" else gpu, interpret=True)(*args)
    return jax.lax.platform_dependent(
        *args,
        tpu=functools.partial(tpu, interpret=False),
        cuda=functools.partial(gpu, interpret=False),
        default=interpreted,
    )

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

See docs/ops.md#platform-selection-and-interpret-mode.
"""

import functools
import os
from collections.abc import Callable
from typing import Optional, Union

import jax

# A kernel call's ``interpret`` argument (see interpreter_mode).
Interpret = Optional[Union[bool, str]]
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
    if interpret == "tpu":
        return "tpu"
    raise ValueError(f"`interpret` must be None, True, False, 'gpu' or 'tpu', got {interpret!r}")


def triton_fp32_dot(interpret: bool):
    """The fp32 product algorithm of a Triton-backend kernel (None: ``HIGHEST``); the interpreter
    always uses ``HIGHEST``, which every XLA backend runs."""
    value = os.environ.get(TRITON_FP32_DOT_ENV, "tf32x3").strip().lower()
    if value not in _TRITON_FP32_DOTS:
        raise ValueError(f"{TRITON_FP32_DOT_ENV}={value!r}: expected one of {', '.join(_TRITON_FP32_DOTS)}")
    return None if interpret else _TRITON_FP32_DOTS[value]


def run_on_platform(*args, tpu: Callable, gpu: Callable, interpret: Interpret = None):
    """``tpu(*args, interpret=False)`` on TPU, ``gpu(*args, interpret=False)`` on CUDA, and
    ``gpu(*args, interpret=True)`` on any other platform; ``interpret`` (:func:`interpreter_mode`)
    forces one kernel in the interpreter everywhere, or (``False``) leaves other platforms without one."""
    mode = interpreter_mode(interpret)
    if mode in ("gpu", "tpu"):
        return functools.partial(tpu if mode == "tpu" else gpu, interpret=True)(*args)
    branches = dict(tpu=functools.partial(tpu, interpret=False), cuda=functools.partial(gpu, interpret=False))
    if mode != "never":
        branches["default"] = functools.partial(gpu, interpret=True)
    return jax.lax.platform_dependent(*args, **branches)

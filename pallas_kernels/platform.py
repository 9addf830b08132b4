"""One kernel call that lowers for TPU, CUDA and CPU alike.

``jax.lax.platform_dependent`` picks the branch when the program is lowered, so the same traced
function can be lowered for ``tpu`` (Mosaic kernel), ``cuda`` (Triton kernel) or ``cpu``, where
the Pallas interpreter runs the Triton-backend kernel. ``JAXATTN_PALLAS_INTERPRET`` forces the
interpreter on every platform: ``=1`` or ``=gpu`` interprets the Triton-backend kernel, ``=tpu`` the
TPU kernel (to debug a kernel on an accelerator, or test the TPU kernel on CPU).
"""

import functools
import os
from collections.abc import Callable

import jax

INTERPRET_ENV = "JAXATTN_PALLAS_INTERPRET"


def forced_interpreter() -> str:
    """``""`` (not forced), ``"gpu"`` or ``"tpu"``: which kernel ``JAXATTN_PALLAS_INTERPRET`` asks to interpret."""
    value = os.environ.get(INTERPRET_ENV, "").strip().lower()
    if value in ("", "0"):
        return ""
    if value in ("1", "gpu", "tpu"):
        return "tpu" if value == "tpu" else "gpu"
    raise ValueError(f"{INTERPRET_ENV}={value!r}: expected 0, 1, gpu or tpu")


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

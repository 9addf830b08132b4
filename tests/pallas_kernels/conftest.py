"""The ``kernel`` fixture: each kernel test runs once per kernel, the Triton-backend one (``"gpu"``)
and the Mosaic one (``"tpu"``), both in the Pallas interpreter. ``verified_triton_modules``: lowering
tests verify the Triton modules they produce."""

import jax
import pytest

from pallas_kernels.platform import INTERPRET_ENV

KERNELS = ["gpu", "tpu"]


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    monkeypatch.setenv(INTERPRET_ENV, request.param)
    return request.param


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.fixture
def verified_triton_modules(request, monkeypatch):
    """Runs MLIR's verifier on every Triton module lowered during the test, as the GPU compiler does
    before anything else: lowering for CUDA without a GPU then rejects what the device would (an
    ill-typed loop bound, say). Relies on a private module of jax; without it nothing is verified.

    From jax 0.11 Pallas lowers a Triton kernel only with a GPU (or an abstract one) to read its
    compute capability from: there a CUDA lowering test without a GPU skips."""
    platform = getattr(getattr(request.node, "callspec", None), "params", {}).get("platform")
    if platform == "cuda" and jax.__version_info__ >= (0, 11) and not _has_gpu():
        pytest.skip("jax >= 0.11 lowers Pallas Triton kernels only where a GPU is visible")
    try:
        from jax._src.pallas.triton import lowering
    except ImportError:
        return
    lower = lowering.lower_jaxpr_to_triton_module

    def lower_and_verify(*args, **kwargs):
        result = lower(*args, **kwargs)
        result.module.operation.verify()
        return result

    monkeypatch.setattr(lowering, "lower_jaxpr_to_triton_module", lower_and_verify)

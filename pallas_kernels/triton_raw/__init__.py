"""Hand-written Triton kernels called through jax-triton (the ``gpu`` extra), for comparing Pallas
with raw Triton on a GPU. Importing them needs ``triton`` and ``jax_triton`` (which needs a CUDA
build of jaxlib); :func:`available` says whether they can run here."""

import importlib.util

import jax


def importable() -> bool:
    """``triton`` and ``jax_triton`` are installed (kernels can be compiled, e.g. lowered for CUDA)."""
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("jax_triton") is None:
        return False
    try:
        import jax_triton  # noqa: F401  (raises ImportError without a CUDA jaxlib plugin)
    except ImportError:
        return False
    return True


def available() -> bool:
    """The kernels can run: importable, and the default backend is a CUDA GPU."""
    return importable() and jax.default_backend() == "gpu"

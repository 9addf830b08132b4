"""Choosing an implementation behind an op's ``impl=`` argument.

Every public op in :mod:`jaxattn.ops` maps implementation names to functions. ``"auto"`` picks
the Pallas kernels on GPU and TPU when the op has them and they support the call, and the XLA
path otherwise (on CPU, Pallas runs only in the interpreter, which is for testing).
"""

import functools
from collections.abc import Callable, Mapping
from typing import Optional, TypeVar

import jax
from absl import logging

F = TypeVar("F", bound=Callable)
_ACCELERATORS = ("gpu", "tpu")


@functools.cache
def _log_fallback_once(op_name: str, reason: str) -> None:
    logging.info("%s: impl='auto' uses the XLA path: %s", op_name, reason)


def resolve_impl(
    op_name: str, impl: str, implementations: Mapping[str, F], *, pallas_unsupported: Optional[str] = None
) -> F:
    """Returns ``implementations[impl]``, resolving ``"auto"`` to ``"pallas"`` or ``"xla"``.

    Args:
      pallas_unsupported: why the Pallas path cannot take this call (e.g. ``"segment_ids"``), or None.
        ``"auto"`` then uses XLA and says so once in the log.

    Raises:
      ValueError: naming the op and the implementations it has, for an unknown ``impl``.
    """
    if impl == "auto":
        impl = "xla"
        if "pallas" in implementations and jax.default_backend() in _ACCELERATORS:
            if pallas_unsupported is None:
                impl = "pallas"
            else:
                _log_fallback_once(op_name, f"the Pallas kernel does not support {pallas_unsupported}")
    try:
        return implementations[impl]
    except KeyError:
        known = ", ".join(repr(name) for name in ("auto", *implementations))
        raise ValueError(f"{op_name}: impl={impl!r} is not one of {known}") from None

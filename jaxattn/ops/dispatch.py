"""Choosing an implementation behind an op's ``impl=`` argument.

Every public op in :mod:`jaxattn.ops` maps implementation names to functions. ``"auto"`` picks
the fastest implementation available for the current backend; until an op has a Pallas kernel
that is its XLA path.
"""

from collections.abc import Callable, Mapping
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def resolve_impl(op_name: str, impl: str, implementations: Mapping[str, F]) -> F:
    """Returns ``implementations[impl]``, mapping ``"auto"`` to ``"pallas"`` or else ``"xla"``.

    Raises:
      ValueError: naming the op and the implementations it has, for an unknown ``impl``.
    """
    if impl == "auto":
        impl = "pallas" if "pallas" in implementations else "xla"
    try:
        return implementations[impl]
    except KeyError:
        known = ", ".join(repr(name) for name in ("auto", *implementations))
        raise ValueError(f"{op_name}: impl={impl!r} is not one of {known}") from None

"""Choosing an implementation behind an op's ``impl=`` argument.

Every public op in :mod:`jaxattn.ops` maps implementation names to functions and resolves ``impl``
here, by two rules that hold for every op:

* ``"auto"`` picks the Pallas kernels on GPU and TPU when the op has them and they support the call,
  and the XLA path otherwise (on CPU, Pallas runs only in the interpreter, which is for testing).
* A custom ``dot_general`` (an L-Matmul, fp8 products) changes what the op computes; ``impl`` only
  changes how fast. So the arithmetic wins: the call runs on the implementations that route their
  products through a ``dot_general`` (the op's ``takes_dot_general``), and an ``impl`` that cannot
  (``"auto"``, or an explicit kernel) gives way to the fastest of them, said once in the log. Layers
  pass their arithmetic and their ``impl`` straight through; none decides this itself.

An explicit ``impl="pallas"`` on a call the kernels do not support (``pallas_unsupported``: e.g.
``segment_ids``, a dtype) is refused here with one ``ValueError`` for every op, and so are the
kernels' own options (``pallas_options``: ``block_sizes``, ``interpret``) on a call that does not
run them; on one that does, they are passed to the op's pallas function as keyword arguments.

See docs/ops.md#impl-reference-xla-pallas-auto.
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, TypeVar

import jax
from absl import logging

F = TypeVar("F", bound=Callable)
_ACCELERATORS = ("gpu", "tpu")
_FASTEST_FIRST = ("pallas", "xla", "reference")


@functools.cache
def _log_once(op_name: str, message: str) -> None:
    logging.info("%s: %s", op_name, message)


def is_custom_dot_general(dot_general: Optional[Callable]) -> bool:
    """Whether ``dot_general`` replaces the exact product (None and ``lax.dot_general`` do not)."""
    return dot_general is not None and dot_general is not jax.lax.dot_general


def _for_dot_general(op_name: str, impl: str, takes_dot_general: Sequence[str]) -> str:
    """The implementation a custom ``dot_general`` runs on, given the requested ``impl``."""
    if impl in takes_dot_general:
        return impl
    chosen = next(name for name in _FASTEST_FIRST if name in takes_dot_general)
    _log_once(op_name, f"a custom dot_general runs on impl={chosen!r} (impl={impl!r} cannot take one)")
    return chosen


def _refuse_pallas_options(op_name: str, requested: str, impl: str, pallas_options) -> str:
    """``impl``, unless kernel options were given (not None) for a call that does not run the kernels."""
    given = [name for name, value in (pallas_options or {}).items() if value is not None]
    if impl != "pallas" and given:
        names = " and ".join(f"`{name}`" for name in given)
        resolved = f" (impl={requested!r} resolved to {impl!r})" if requested != impl else ""
        raise ValueError(f"{op_name}: {names}: for impl='pallas' only (the Pallas kernels), but this call runs "
                         f"impl={impl!r}{resolved}")
    return impl


def resolve_impl_name(
    op_name: str,
    impl: str,
    implementations: Mapping[str, F],
    *,
    pallas_unsupported: Optional[str] = None,
    dot_general: Optional[Callable] = None,
    takes_dot_general: Sequence[str] = (),
    pallas_options: Optional[Mapping[str, Any]] = None,
) -> str:
    """The name of the implementation :func:`resolve_impl` returns (same arguments, same errors):
    for an op whose parts come from several tables, resolved once and looked up in each."""
    name = _resolve_name(op_name, impl, implementations, pallas_unsupported, dot_general, takes_dot_general)
    return _refuse_pallas_options(op_name, impl, name, pallas_options)


def _resolve_name(op_name, impl, implementations, pallas_unsupported, dot_general, takes_dot_general) -> str:
    if impl != "auto" and impl not in implementations:
        known = ", ".join(repr(name) for name in ("auto", *implementations))
        raise ValueError(f"{op_name}: impl={impl!r} is not one of {known}")
    if is_custom_dot_general(dot_general):
        if not takes_dot_general:
            raise ValueError(f"{op_name}: takes no custom dot_general")
        return _for_dot_general(op_name, impl, takes_dot_general)
    if impl == "pallas" and pallas_unsupported is not None:
        raise ValueError(f"{op_name}: impl='pallas' does not support {pallas_unsupported}; use impl='xla'")
    if impl == "auto":
        impl = "xla" if "xla" in implementations else "reference"
        if "pallas" in implementations and jax.default_backend() in _ACCELERATORS:
            if pallas_unsupported is None:
                impl = "pallas"
            else:
                _log_once(op_name, f"impl='auto' uses the XLA path: the Pallas kernel does not support "
                                   f"{pallas_unsupported}")
    return impl


def _with_options(implementation, options: Mapping[str, Any]):
    """``implementation`` (a function, or a table of them) with ``options`` bound as keywords."""
    if isinstance(implementation, Mapping):
        return {key: _with_options(value, options) for key, value in implementation.items()}
    return functools.partial(implementation, **options)


def resolve_impl(op_name: str, impl: str, implementations: Mapping[str, F], **options) -> F:
    """Returns ``implementations[impl]``, resolving ``"auto"`` and a custom ``dot_general`` (module docstring).

    Args:
      op_name: the public op, for messages.
      impl: ``"auto"`` or a key of ``implementations``.
      implementations: name -> function; ``"reference"`` is always one.
      options: keyword options of :func:`resolve_impl_name`:
      pallas_unsupported: why the Pallas path cannot take this call (e.g. ``"segment_ids"``), or None.
        ``"auto"`` then uses XLA and says so once in the log; ``"pallas"`` is refused.
      dot_general: the product the caller asked for (None: the exact one).
      takes_dot_general: the implementations whose products go through ``dot_general``.
      pallas_options: the kernels' options of this call by name (``block_sizes``, ``interpret``;
        None: not given). Given ones are refused unless the call runs ``"pallas"``, whose function
        then receives them all as keyword arguments.

    Raises:
      ValueError: naming the op and the implementations it has, for an unknown ``impl``; for a
        custom ``dot_general`` on an op none of whose implementations takes one; naming the op and
        ``pallas_unsupported``, for ``impl="pallas"`` on a call the kernels do not support (with
        the exact product: a custom ``dot_general`` moves the call off the kernels, as above);
        naming the options, for ``pallas_options`` given to a call that runs another implementation.
    """
    name = resolve_impl_name(op_name, impl, implementations, **options)
    pallas_options = options.get("pallas_options")
    if name == "pallas" and pallas_options is not None:
        return _with_options(implementations[name], pallas_options)
    return implementations[name]

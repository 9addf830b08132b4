"""Diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (the core of S5, S4D and gated scans).

Shapes: ``a`` and ``b`` are ``[B, T, D, ...]``, at least one feature axis (``a`` may have size-1
axes that broadcast against ``b``); the state ``h0`` and ``h_last`` are ``[B, D, ...]``. Real or
complex. A ``[T, D]`` array is refused rather than read as B = T sequences of length D.

Implementations:
  * ``"reference"``: a sequential :func:`jax.lax.scan` over time (the test oracle).
  * ``"xla"``: :func:`jax.lax.associative_scan` with the operator
    ``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (Smith et al. 2023, S5), O(log T) depth,
    and a ``custom_vjp`` that runs the same scan backwards (:func:`_scan_xla`).
  * ``"pallas"``: a sequential scan kernel for GPU (Triton) and TPU (Mosaic) tiled over features,
    whose backward is the same kernel run the other way (:mod:`pallas_kernels.diagonal_scan`);
    fp32, bf16, fp16 and complex64.

See docs/ssm.md#the-parallel-scan.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_floating, require_nonempty, require_rank
from jaxattn.ops.dispatch import resolve_impl
from pallas_kernels import diagonal_scan as diagonal_scan_kernel

_RANK_HINT = "for one sequence add a batch axis (x[None]), for one scalar per step a feature axis (x[..., None])"


def _validate(a: jax.Array, b: jax.Array, h0: Optional[jax.Array]) -> tuple[int, ...]:
    """Checks ranks, shapes and dtypes; returns the full (broadcast) shape ``[B, T, ...]``."""
    for name, x in (("a", a), ("b", b)):
        require_rank("diagonal_scan", name, x, "B, T, D, ...", _RANK_HINT)
        require_floating("diagonal_scan", name, x, complex_ok=True)
    if a.ndim != b.ndim:
        raise ValueError(
            f"diagonal_scan: `a` and `b` must have the same rank [B, T, ...], got {a.shape} and {b.shape}"
        )
    try:
        shape = jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"diagonal_scan: `a` {a.shape} does not broadcast against `b` {b.shape}"
        ) from None
    if shape != b.shape:
        raise ValueError(f"diagonal_scan: `a` {a.shape} may broadcast to `b` {b.shape}, not widen it")
    require_nonempty("diagonal_scan", "b", shape[1])
    if h0 is not None and h0.shape != (shape[0], *shape[2:]):
        raise ValueError(
            f"diagonal_scan: `h0` must have shape [B, ...] = {(shape[0], *shape[2:])}, got {h0.shape}"
        )
    return shape


def _scan_reference(a, b, h0, reverse):
    a = jnp.broadcast_to(a, b.shape)

    def step(h, ab):
        a_t, b_t = ab
        h = a_t * h + b_t
        return h, h

    # Time-major for lax.scan.
    a_tm, b_tm = jnp.moveaxis(a, 1, 0), jnp.moveaxis(b, 1, 0)
    h_last, h = jax.lax.scan(step, h0, (a_tm, b_tm), reverse=reverse)
    return jnp.moveaxis(h, 0, 1), h_last


def _combine(earlier, later):
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, a_j * b_i + b_j


def _scan_associative(a, b, h0, reverse):
    # A time-invariant `a` [B, 1, ...] is broadcast here, inside the jitted graph, where XLA fuses it.
    a = jnp.broadcast_to(a, b.shape)
    # Fold the initial state into the first element processed: b_first += a_first * h0.
    first, last = (-1, 0) if reverse else (0, -1)
    b = b.at[:, first].add(a[:, first] * h0)
    _, h = jax.lax.associative_scan(_combine, (a, b), axis=1, reverse=reverse)
    return h, h[:, last]


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``x`` summed over the axes where ``shape`` has size 1 (the transpose of a broadcast to ``x``)."""
    axes = tuple(i for i, (size, full) in enumerate(zip(shape, x.shape)) if size == 1 and full != 1)
    return jnp.sum(x, axis=axes, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _scan_xla(a, b, h0, reverse):
    """The ``"xla"`` impl: :func:`_scan_associative` with its backward written out as the scan run the
    other way, as the Pallas kernel's (:mod:`pallas_kernels.diagonal_scan`): with ``g_t`` the total
    gradient of ``h_t``,

        ``g_t = a_{t+1} g_{t+1} + dh_t`` (``g_{T-1} = dh_{T-1} + dh_last``),
        ``db_t = g_t``,  ``da_t = g_t h_{t-1}``,  ``dh0 = a_0 g_0``

    (JAX's transpose convention: no complex conjugates), mirrored for ``reverse``. Differentiating
    through :func:`jax.lax.associative_scan` instead (the transposes of its strided slices and pads)
    took 8-35x its forward on CPU at T = 1024-4096. A time-invariant ``a`` (``[B, 1, ...]``, as in S5 and S4D
    without segment resets) stays unbroadcast: the backward scan keeps the same transition once
    ``dh_last`` is folded into ``dh_{T-1}``, and ``da`` is one fused reduction over time.
    """
    return _scan_associative(a, b, h0, reverse)


def _scan_xla_forward(a, b, h0, reverse):
    h, h_last = _scan_associative(a, b, h0, reverse)
    return (h, h_last), (a, h, h0)


def _scan_xla_backward(reverse, residuals, cotangents):
    a, h, h0 = residuals
    d_h, d_last = cotangents
    first, last = (-1, 0) if reverse else (0, -1)
    if a.shape[1] == 1:
        g, _ = _scan_associative(a, d_h.at[:, last].add(d_last), jnp.zeros_like(d_last), not reverse)
    else:
        ones = jnp.ones_like(a[:, :1])
        # a_{t+1} (a_{t-1} when reverse); the one beyond the end carries dh_last in as the initial state.
        transitions = jnp.concatenate([ones, a[:, :-1]] if reverse else [a[:, 1:], ones], axis=1)
        g, _ = _scan_associative(transitions, d_h, d_last, not reverse)
    previous = jnp.concatenate([h[:, 1:], h0[:, None]] if reverse else [h0[:, None], h[:, :-1]], axis=1)
    return _sum_to_shape(g * previous, a.shape), g, a[:, first] * g[:, first]


_scan_xla.defvjp(_scan_xla_forward, _scan_xla_backward)


def _pallas_unsupported(dtype) -> Optional[str]:
    supported = diagonal_scan_kernel.SUPPORTED_DTYPES
    if any(dtype == d for d in supported):
        return None
    return f"dtype {jnp.dtype(dtype).name} (it takes {', '.join(jnp.dtype(d).name for d in supported)})"


def _scan_pallas(a, b, h0, reverse, block_sizes=None, interpret=None):
    """The kernel on ``[B, T, features]`` (dtypes it does not take are refused by the dispatcher)."""
    a = jnp.broadcast_to(a, b.shape)
    batch, length = b.shape[:2]
    flat = lambda x: x.reshape(batch, length, -1)  # noqa: E731
    h, h_last = diagonal_scan_kernel.diagonal_scan(flat(a), flat(b), h0.reshape(batch, -1), reverse=reverse,
                                                     block_sizes=block_sizes, interpret=interpret)
    return h.reshape(b.shape), h_last.reshape(h0.shape)


_IMPLEMENTATIONS = {"reference": _scan_reference, "xla": _scan_xla, "pallas": _scan_pallas}


def diagonal_scan(
    a: jax.Array,
    b: jax.Array,
    *,
    h0: Optional[jax.Array] = None,
    reverse: bool = False,
    block_sizes=None,
    interpret=None,
    impl: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """All states of the diagonal recurrence ``h_t = a_t * h_{t-1} + b_t``.

    Args:
      a: transitions ``[B, T, D, ...]``; size-1 axes broadcast against ``b``.
      b: inputs ``[B, T, D, ...]`` (one sequence: ``b[None]``; one scalar per step: ``b[..., None]``).
      h0: initial state ``[B, D, ...]``; zeros when omitted.
      reverse: run from ``t = T-1`` down to 0, i.e. ``h_t = a_t * h_{t+1} + b_t``.
      block_sizes, interpret: impl="pallas" only: the kernels' tiles (a ``ScanBlockSizes``, one
        per platform, or None: tuned or default) and the interpreter switch (docs/ops.md#block-sizes).
      impl: ``"reference"``, ``"xla"``, ``"pallas"`` or ``"auto"`` (pallas on GPU and TPU for the
        dtypes it takes, else xla).

    Returns:
      ``(h, h_last)``: every state ``[B, T, ...]`` and the state after the last step processed
      ``[B, ...]`` (``h[:, -1]``, or ``h[:, 0]`` when ``reverse``), in the promoted dtype of
      ``a``, ``b`` and ``h0``.

    Example::

        a, b = jnp.full((2, 100, 8), 0.9), jnp.ones((2, 100, 8))  # [B, T, D]
        h, h_last = diagonal_scan(a, b)  # h [2, 100, 8]: an exponential moving sum
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    h0 = None if h0 is None else jnp.asarray(h0)
    shape = _validate(a, b, h0)
    dtype = jnp.result_type(a, b, *(() if h0 is None else (h0,)))
    a = a.astype(dtype)  # broadcast by each impl: the xla one keeps a time-invariant `a` [B, 1, ...] as it is
    b = b.astype(dtype)
    h0 = jnp.zeros((shape[0], *shape[2:]), dtype) if h0 is None else h0.astype(dtype)
    scan = resolve_impl("diagonal_scan", impl, _IMPLEMENTATIONS, pallas_unsupported=_pallas_unsupported(dtype),
                        pallas_options=dict(block_sizes=block_sizes, interpret=interpret))
    return scan(a, b, h0, reverse)

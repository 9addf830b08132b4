"""The causal (and anti-causal) convolution ``y = K * u`` of a sequence with per-feature kernels.

docs/ssm.md#the-convolution-view. Linear state space layers apply their kernels ``K [H, L]``
(:mod:`jaxattn.ops.ssm_convolution`) to ``u [B, L, H]`` this way.

* :func:`fft_convolution`: ``y = K * u`` zero-padded to ``2L`` (linear, not circular), with an
  optional anti-causal kernel for bidirectional layers: ``impl="xla"`` by FFT, ``impl="reference"``
  as the direct sum (a ``[L, L]`` Toeplitz product).
* :func:`padded_fft_convolution`: the same with padding masked (``impl="reference"``: the direct
  sum over the pairs of real tokens).
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_nonempty, require_rank, require_segment_ids
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.segments import in_first_segment

_HIGHEST = jax.lax.Precision.HIGHEST


def _padded_convolution_xla(u, kernels, segment_ids):
    if segment_ids is None:
        return fft_convolution(u, *kernels, impl="xla"), u
    keep = in_first_segment(segment_ids)[..., None]
    u = jnp.where(keep, u, 0.0)
    return jnp.where(keep, fft_convolution(u, *kernels, impl="xla"), 0.0), u


def _padded_convolution_reference(u, kernels, segment_ids):
    """``y[b, t] = real[b, t] sum_s real[b, s] W[t, s] u[b, s]`` with the Toeplitz weights
    ``W[h, t, s] = K[h, t - s]`` (``s <= t``), ``K'[h, s - t - 1]`` (``s > t``), ``real`` the first
    segment's tokens: the direct sum over the pairs of real tokens."""
    dtype = jnp.promote_types(jnp.result_type(u, *kernels), jnp.float32)
    weights = _toeplitz(_circular_kernel(*kernels, dtype=dtype))  # [H, L, L]
    real = jnp.ones(u.shape[:2], bool) if segment_ids is None else in_first_segment(segment_ids)  # [B, L]
    pairs = (real[:, :, None] & real[:, None, :]).astype(dtype)  # [B, L, L]: both tokens real
    y = jnp.einsum("hts,bts,bsh->bth", weights, pairs, u.astype(dtype), precision=_HIGHEST)
    return y, jnp.where(real[..., None], u, 0.0)


_PADDED_IMPLEMENTATIONS = {"reference": _padded_convolution_reference, "xla": _padded_convolution_xla}


def padded_fft_convolution(u: jax.Array, kernels: list, segment_ids=None, *,
                           impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """:func:`fft_convolution` of ``u [B, L, H]`` with one or two (causal, anti-causal) kernels,
    where ``segment_ids [B, L]`` mark padding: tokens outside the segment of a sequence's first
    token get zero inputs and outputs (exact for one sequence followed by padding; a convolution
    cannot restart at packed-sequence boundaries). Returns ``(y, u)`` with the masked inputs.
    ``impl``: ``"xla"`` (FFT; ``"auto"``) or ``"reference"`` (the direct sum over real tokens).

    Example::

        u, kernel = jnp.ones((2, 64, 4)), jnp.ones((4, 64)) / 64  # [B, L, H], [H, L]
        y, u = padded_fft_convolution(u, [kernel], segment_ids=jnp.arange(64)[None].repeat(2, 0) // 48)
    """
    if not 1 <= len(kernels) <= 2:
        raise ValueError(f"padded_fft_convolution: one or two kernels (causal, anti-causal), got {len(kernels)}")
    _check_convolution("padded_fft_convolution", u, *kernels)
    if segment_ids is not None:
        require_segment_ids("padded_fft_convolution", segment_ids, u.shape[:2], layout="B, L")
    return resolve_impl("padded_fft_convolution", impl, _PADDED_IMPLEMENTATIONS)(u, kernels, segment_ids)


def _fft_convolution_xla(u, circular):
    """By real FFTs of length 2L: ``circular [H, 2L]`` holds the causal lags, then the anti-causal ones."""
    length = u.shape[1]
    spectrum = jnp.fft.rfft(u, n=2 * length, axis=1) * jnp.fft.rfft(circular, axis=-1).T
    return jnp.fft.irfft(spectrum, n=2 * length, axis=1)[:, :length]


def _circular_kernel(kernel, reverse_kernel=None, *, dtype):
    """``[H, 2L]``: the causal lags ``0 .. L-1`` of ``kernel``, then those of ``reverse_kernel`` (lag
    ``-1 - l`` at index ``2L - 1 - l``) or zeros, so that index ``(t - s) mod 2L`` holds lag ``t - s``."""
    length = kernel.shape[-1]
    circular = jnp.pad(kernel.astype(dtype), ((0, 0), (0, length)))
    if reverse_kernel is not None:
        circular = circular + jnp.pad(jnp.flip(reverse_kernel.astype(dtype), -1), ((0, 0), (length, 0)))
    return circular


def _toeplitz(circular):
    """``W[h, t, s] = circular[h, (t - s) mod 2L]`` ``[H, L, L]``: ``K[h, t - s]`` for ``s <= t``,
    ``K'[h, s - t - 1]`` (or 0) for ``s > t``, the weights of the direct sum ``y[t] = sum_s W[t, s] u[s]``."""
    length = circular.shape[-1] // 2
    lags = (jnp.arange(length)[:, None] - jnp.arange(length)[None, :]) % (2 * length)  # [L, L]: t - s
    return circular[:, lags]


def _fft_convolution_reference(u, circular):
    """The direct sum: ``y[t] = sum_s circular[h, (t - s) mod 2L] u[s]`` as a ``[H, L, L]`` Toeplitz product."""
    return jnp.einsum("hts,bsh->bth", _toeplitz(circular), u, precision=_HIGHEST)


_FFT_IMPLEMENTATIONS = {"reference": _fft_convolution_reference, "xla": _fft_convolution_xla}


def _check_convolution(op: str, u: jax.Array, kernel: jax.Array, reverse_kernel=None) -> None:
    """``u [B, L, H]`` (L > 0) and kernels ``[H, L]``."""
    require_rank(op, "u", u, "B, L, H")
    require_rank(op, "kernel", kernel, "H, L")
    length = u.shape[1]
    require_nonempty(op, "u", length, axis="L")
    if kernel.shape != (u.shape[2], length) or (reverse_kernel is not None and reverse_kernel.shape != kernel.shape):
        raise ValueError(f"{op}: kernels must be [H, L] = {(u.shape[2], length)}, got {kernel.shape}"
                         + ("" if reverse_kernel is None else f" and {reverse_kernel.shape}"))


def fft_convolution(u: jax.Array, kernel: jax.Array, reverse_kernel=None, *, impl: str = "auto") -> jax.Array:
    """``y[b, t, h] = sum_{s <= t} K[h, t - s] u[b, s, h]`` (+ ``sum_{s > t} K'[h, s - t - 1] u[b, s, h]``
    with ``reverse_kernel`` K'), by real FFTs of length 2L: zero padding makes the circular
    convolution linear.

    Args:
      u: ``[B, L, H]``.
      kernel, reverse_kernel: ``[H, L]``.
      impl: ``"reference"`` (the direct sum, quadratic in L), ``"xla"`` (FFT) or ``"auto"`` (xla).

    Returns:
      ``[B, L, H]`` float32 (float64 for float64 inputs).

    Example::

        u, kernel = jnp.ones((2, 64, 4)), jnp.exp(-jnp.arange(64.0))[None].repeat(4, 0)  # [B, L, H], [H, L]
        y = fft_convolution(u, kernel)  # [2, 64, 4]
    """
    _check_convolution("fft_convolution", u, kernel, reverse_kernel)
    dtype = jnp.promote_types(jnp.result_type(u, kernel), jnp.float32)
    circular = _circular_kernel(kernel, reverse_kernel, dtype=dtype)  # [H, 2L]
    return resolve_impl("fft_convolution", impl, _FFT_IMPLEMENTATIONS)(u.astype(dtype), circular)

"""Convolution kernels of linear state space models, and the FFT convolution that applies them.

docs/ssm.md#the-convolution-view. A discrete system ``x_k = Abar x_{k-1} + Bbar u_k``,
``y_k = Re(C x_k)`` is the causal convolution ``y = K * u`` with ``K[l] = Re(C Abar^l Bbar)``;
for ``L`` steps the kernel is computed once and applied by FFT in ``O(L log L)``.

* :func:`s4d_kernel`: diagonal ``A`` (S4D), zero-order hold: ``impl="xla"`` a Vandermonde
  product, ``impl="reference"`` the impulse response by repeated multiplication by ``Abar``.
* :func:`s4_kernel`: diagonal plus low rank ``A = Lambda - P Q^*`` (S4), bilinear, through the
  generating function at the roots of unity: ``impl="xla"`` with Cauchy sums and the Woodbury
  identity, ``impl="reference"`` with a dense linear solve per root (the oracle).
* :func:`fft_convolution`: ``y = K * u`` zero-padded to ``2L`` (linear, not circular), with an
  optional anti-causal kernel for bidirectional layers: ``impl="xla"`` by FFT, ``impl="reference"``
  as the direct sum (a ``[L, L]`` Toeplitz product).

Modes come in conjugate pairs and only one of each is stored (``P = N/2``), so every kernel is
``2 Re`` of a sum over the stored modes, or, for the low-rank term that couples them, a sum over
the stored modes and their conjugates.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_nonempty, require_positive_int, require_rank, require_segment_ids
from jaxattn.ops.discretization import zero_order_hold
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.segments import in_first_segment


def _check_modes(op: str, step: jax.Array, **modes: jax.Array) -> None:
    """Every per-feature mode array ``[H, P]`` (one shape) and ``step [H]``."""
    for name, a in modes.items():
        require_rank(op, name, a, "H, P")
    shapes = {name: a.shape for name, a in modes.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{op}: the mode arrays must share one shape [H, P], got {shapes}")
    require_rank(op, "step", step, "H")
    if step.shape[0] != next(iter(shapes.values()))[0]:
        raise ValueError(f"{op}: `step` must be [H] = {next(iter(shapes.values()))[:1]}, got {step.shape}")


def _s4d_kernel_xla(lam_bar_exponent, weights, length):
    """``sum_n weights[h, n] exp(l dt_h A[h, n])``: one Vandermonde product."""
    vandermonde = jnp.exp(lam_bar_exponent[..., None] * jnp.arange(length))  # [H, P, L]: Abar^l
    return jnp.einsum("hp,hpl->hl", weights, vandermonde)


def _s4d_kernel_reference(lam_bar_exponent, weights, length):
    """The impulse response ``C Abar^l Bbar``: the state ``Bbar`` multiplied by ``Abar`` once per lag."""
    lam_bar = jnp.exp(lam_bar_exponent)

    def lag(state, _):
        return lam_bar * state, jnp.sum(state, axis=-1)

    _, taps = jax.lax.scan(lag, weights, None, length=length)  # [L, H]
    return taps.T


_S4D_IMPLEMENTATIONS = {"reference": _s4d_kernel_reference, "xla": _s4d_kernel_xla}


def s4d_kernel(lam: jax.Array, b: jax.Array, c: jax.Array, step: jax.Array, length: int,
               conjugate_pairs: bool = True, *, impl: str = "auto") -> jax.Array:
    """``K[h, l] = 2 Re sum_n C[h,n] B[h,n] (exp(dt_h A[h,n]) - 1) / A[h,n] exp(l dt_h A[h,n])``.

    Args:
      lam: ``A`` ``[H, P]`` complex (one of each conjugate pair).
      b, c: ``[H, P]`` complex.
      step: ``dt`` ``[H]`` positive.
      length: L.
      conjugate_pairs: each mode stands for a conjugate pair (the factor 2); False: the modes are
        all there is (a spectrum without conjugate symmetry, e.g. PTD's), ``K = Re sum_n ...``.
      impl: ``"reference"`` (the impulse response), ``"xla"`` (Vandermonde) or ``"auto"`` (xla).

    Returns:
      ``[H, L]`` float32 (float64 for complex128 inputs).

    Example::

        lam = jnp.full((4, 8), -0.5 + 1j)  # [H, P]
        kernel = s4d_kernel(lam, jnp.ones_like(lam), jnp.ones_like(lam), jnp.full((4,), 0.1), 64)  # [4, 64]
    """
    _check_modes("s4d_kernel", step, lam=lam, b=b, c=c)
    require_positive_int("s4d_kernel", "length", length)
    kernel = resolve_impl("s4d_kernel", impl, _S4D_IMPLEMENTATIONS)
    _, gain = zero_order_hold(lam, step[:, None])  # [H, P]: B_bar = gain B
    return (2.0 if conjugate_pairs else 1.0) * kernel(step[:, None] * lam, c * b * gain, length).real


def _roots_of_unity(length: int, dtype) -> jax.Array:
    """``omega_k = exp(-2 pi i k / L)``: ``Khat(omega_k) = sum_l K[l] omega_k^l = FFT(K)[k]``."""
    return jnp.exp(-2j * jnp.pi * jnp.arange(length) / length).astype(dtype)


def _with_conjugates(*arrays: jax.Array) -> list[jax.Array]:
    """``[..., P] -> [..., 2P]``: the stored modes followed by their conjugates."""
    return [jnp.concatenate([a, a.conj()], axis=-1) for a in arrays]


def _s4_generating_function_xla(lam, p, q, b, c_tilde, step, length):
    """``Khat(omega) = 2 / (1 + omega) (k00 - k01 k10 / (1 + k11))`` with Cauchy sums
    ``k_ab(omega) = sum_n a_n b_n / (g(omega) - Lambda_n)``, ``g = (2/dt)(1 - omega)/(1 + omega)``,
    ``a in (C~, Q^*)``, ``b in (B, P)`` (Woodbury on ``(g I - Lambda + P Q^*)^{-1}``)."""
    lam, p, q, b, c_tilde = _with_conjugates(lam, p, q, b, c_tilde)  # [H, N]
    omega = _roots_of_unity(length, lam.dtype)  # [L]
    g = (2.0 / step)[:, None] * (1.0 - omega) / (1.0 + omega)  # [H, L]
    cauchy = 1.0 / (g[:, :, None] - lam[:, None, :])  # [H, L, N]
    k = lambda left, right: jnp.einsum("hn,hln->hl", left * right, cauchy)  # noqa: E731
    k00, k01, k10, k11 = k(c_tilde, b), k(c_tilde, p), k(q.conj(), b), k(q.conj(), p)
    return 2.0 / (1.0 + omega) * (k00 - k01 * k10 / (1.0 + k11))


def _s4_generating_function_reference(lam, p, q, b, c_tilde, step, length):
    """``Khat(omega) = C~ (I - Abar omega)^{-1} Bbar`` by a dense solve per root, with the bilinear
    ``Abar = (I - dt/2 A)^{-1} (I + dt/2 A)``, ``Bbar = (I - dt/2 A)^{-1} dt B``, ``A = Lambda - P Q^*``."""
    omega = _roots_of_unity(length, lam.dtype)

    def per_feature(lam, p, q, b, c_tilde, dt):
        a_bar, b_bar = s4_discrete_system(lam, p, q, b, dt)
        eye = jnp.eye(a_bar.shape[0], dtype=a_bar.dtype)
        resolvent = jax.vmap(lambda z: jnp.linalg.solve(eye - z * a_bar, b_bar))(omega)  # [L, N]
        (c_full,) = _with_conjugates(c_tilde)
        return resolvent @ c_full

    return jax.vmap(per_feature)(lam, p, q, b, c_tilde, step.astype(lam.real.dtype))


_S4_IMPLEMENTATIONS = {"reference": _s4_generating_function_reference, "xla": _s4_generating_function_xla}


def s4_kernel(lam: jax.Array, p: jax.Array, q: jax.Array, b: jax.Array, c_tilde: jax.Array, step: jax.Array,
              length: int, *, impl: str = "auto") -> jax.Array:
    """S4's kernel ``K[h, l] = C Abar^l Bbar`` of the bilinear DPLR system, from its generating function.

    Args:
      lam: ``Lambda`` ``[H, P]`` complex, ``p``, ``q``: the low-rank factors ``[H, P]`` of
        ``A = Lambda - P Q^*`` (``q = p`` for HiPPO), ``b`` ``[H, P]``: each one of a conjugate pair.
      c_tilde: ``C~ = C (I - Abar^L)`` ``[H, P]``, the parameter S4 learns in place of ``C``
        (:func:`s4_c_tilde` converts), so that the length-L generating function is the resolvent.
      step: ``dt`` ``[H]``.
      length: L.
      impl: ``"xla"`` (Cauchy and Woodbury), ``"reference"`` (dense solves) or ``"auto"``.

    Returns:
      ``[H, L]`` real: ``K = IFFT(Khat(omega_k))``.

    Example::

        lam, p, b, _ = jaxattn.nn.hippo.hippo_legs_dplr(64)  # [P] each, one of each conjugate pair
        lam, p, b = (jnp.broadcast_to(a, (4, 32)).astype(jnp.complex64) for a in (lam, p, b))  # H = 4
        kernel = s4_kernel(lam, p, p, b, b, jnp.full((4,), 0.01), 128)  # [4, 128]
    """
    _check_modes("s4_kernel", step, lam=lam, p=p, q=q, b=b, c_tilde=c_tilde)
    require_positive_int("s4_kernel", "length", length)
    generating_function = resolve_impl("s4_kernel", impl, _S4_IMPLEMENTATIONS)
    return jnp.fft.ifft(generating_function(lam, p, q, b, c_tilde, step, length), axis=-1).real


def s4_discrete_system(lam, p, q, b, step):
    """The full ``N x N`` bilinear system of one feature: ``(Abar [N, N], Bbar [N])`` from the stored
    halves ``[P]`` (for :meth:`jaxattn.nn.S4.step` and :func:`s4_c_tilde`).

    Example::

        lam = jnp.array([-0.5 + 1j, -0.5 + 2j])  # [P]: N = 4 with the conjugates
        a_bar, b_bar = s4_discrete_system(lam, lam * 0, lam * 0, jnp.ones(2, complex), 0.1)  # [4, 4], [4]
    """
    lam, p, q, b = _with_conjugates(lam, p, q, b)
    a = jnp.diag(lam) - jnp.outer(p, q.conj())
    eye = jnp.eye(lam.shape[0], dtype=lam.dtype)
    backward = eye - 0.5 * step * a
    return jnp.linalg.solve(backward, eye + 0.5 * step * a), jnp.linalg.solve(backward, step * b)


def s4_c_tilde(lam, p, q, b, c, step, length):
    """``C~ = C (I - Abar^L)`` per feature (``[H, P]`` stored halves in, ``[H, P]`` out): the
    parameterisation in which the generating function of the first L kernel taps is the resolvent.

    Example::

        lam = jnp.full((4, 2), -0.5 + 1j)  # [H, P]
        c_tilde = s4_c_tilde(lam, lam * 0, lam * 0, lam / lam, lam / lam, jnp.full((4,), 0.1), 64)  # [4, 2]
    """

    def per_feature(lam, p, q, b, c, dt):
        a_bar, _ = s4_discrete_system(lam, p, q, b, dt)
        (c_full,) = _with_conjugates(c)
        power = jnp.linalg.matrix_power(a_bar, length)
        return (c_full @ (jnp.eye(power.shape[0], dtype=power.dtype) - power))[: lam.shape[0]]

    return jax.vmap(per_feature)(lam, p, q, b, c, step)


def padded_fft_convolution(u: jax.Array, kernels: list, segment_ids=None) -> tuple[jax.Array, jax.Array]:
    """:func:`fft_convolution` of ``u [B, L, H]`` with one or two (causal, anti-causal) kernels,
    where ``segment_ids [B, L]`` mark padding: tokens outside the segment of a sequence's first
    token get zero inputs and outputs (exact for one sequence followed by padding; a convolution
    cannot restart at packed-sequence boundaries). Returns ``(y, u)`` with the masked inputs.

    Example::

        u, kernel = jnp.ones((2, 64, 4)), jnp.ones((4, 64)) / 64  # [B, L, H], [H, L]
        y, u = padded_fft_convolution(u, [kernel], segment_ids=jnp.arange(64)[None].repeat(2, 0) // 48)
    """
    if segment_ids is None:
        return fft_convolution(u, *kernels), u
    require_segment_ids("padded_fft_convolution", segment_ids, u.shape[:2], layout="B, L")
    keep = in_first_segment(segment_ids)[..., None]
    u = jnp.where(keep, u, 0.0)
    return jnp.where(keep, fft_convolution(u, *kernels), 0.0), u


def _fft_convolution_xla(u, circular):
    """By real FFTs of length 2L: ``circular [H, 2L]`` holds the causal lags, then the anti-causal ones."""
    length = u.shape[1]
    spectrum = jnp.fft.rfft(u, n=2 * length, axis=1) * jnp.fft.rfft(circular, axis=-1).T
    return jnp.fft.irfft(spectrum, n=2 * length, axis=1)[:, :length]


def _fft_convolution_reference(u, circular):
    """The direct sum: ``y[t] = sum_s circular[h, (t - s) mod 2L] u[s]`` as a ``[H, L, L]`` Toeplitz product."""
    length = u.shape[1]
    lags = (jnp.arange(length)[:, None] - jnp.arange(length)[None, :]) % (2 * length)  # [L, L]: t - s
    return jnp.einsum("hts,bsh->bth", circular[:, lags], u, precision=jax.lax.Precision.HIGHEST)


_FFT_IMPLEMENTATIONS = {"reference": _fft_convolution_reference, "xla": _fft_convolution_xla}


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
    require_rank("fft_convolution", "u", u, "B, L, H")
    require_rank("fft_convolution", "kernel", kernel, "H, L")
    length = u.shape[1]
    require_nonempty("fft_convolution", "u", length, axis="L")
    if kernel.shape != (u.shape[2], length) or (reverse_kernel is not None and reverse_kernel.shape != kernel.shape):
        raise ValueError(f"fft_convolution: kernels must be [H, L] = {(u.shape[2], length)}, got {kernel.shape}"
                         + ("" if reverse_kernel is None else f" and {reverse_kernel.shape}"))
    dtype = jnp.promote_types(jnp.result_type(u, kernel), jnp.float32)
    circular = jnp.pad(kernel.astype(dtype), ((0, 0), (0, length)))  # [H, 2L]: lags 0..L-1, then zeros
    if reverse_kernel is not None:  # lag -1 - l sits at index 2L - 1 - l
        circular = circular + jnp.pad(jnp.flip(reverse_kernel.astype(dtype), -1), ((0, 0), (length, 0)))
    return resolve_impl("fft_convolution", impl, _FFT_IMPLEMENTATIONS)(u.astype(dtype), circular)

"""Convolution kernels of linear state space models (applied by :mod:`jaxattn.ops.fft_convolution`).

docs/ssm.md#the-convolution-view. A discrete system ``x_k = Abar x_{k-1} + Bbar u_k``,
``y_k = Re(C x_k)`` is the causal convolution ``y = K * u`` with ``K[l] = Re(C Abar^l Bbar)``;
for ``L`` steps the kernel is computed once and applied by FFT in ``O(L log L)``.

* :func:`s4d_kernel`: diagonal ``A`` (S4D), zero-order hold: ``impl="xla"`` a Vandermonde
  product, ``impl="reference"`` the impulse response by repeated multiplication by ``Abar``.
* :func:`s4_kernel`: diagonal plus low rank ``A = Lambda - P Q^*`` (S4), bilinear, through the
  generating function at the roots of unity: ``impl="xla"`` with Cauchy sums and the Woodbury
  identity, ``impl="reference"`` with a dense linear solve per root (the oracle).
* :func:`s4_discrete_system`, :func:`s4_c_tilde` and :func:`s4_c_from_c_tilde`, S4's full bilinear
  system and the conversions between ``C`` and ``C~``: ``impl="xla"`` by linear solves and a matrix
  power by squaring, ``impl="reference"`` by the explicit inverse and ``L`` successive products.

Modes come in conjugate pairs and only one of each is stored (``P = N/2``), so every kernel is
``2 Re`` of a sum over the stored modes, or, for the low-rank term that couples them, a sum over
the stored modes and their conjugates.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_positive_int, require_rank
from jaxattn.ops.discretization import zero_order_hold
from jaxattn.ops.dispatch import resolve_impl, resolve_impl_name

_HIGHEST = jax.lax.Precision.HIGHEST


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


def _s4d_kernel_xla(lam_bar_exponent, lam_bar, weights, length):
    """``sum_n weights[h, n] exp(l dt_h A[h, n])``: one Vandermonde product, from the exponents
    ``dt A`` (``l dt A`` rather than the powers of ``Abar``)."""
    del lam_bar
    vandermonde = jnp.exp(lam_bar_exponent[..., None] * jnp.arange(length))  # [H, P, L]: Abar^l
    return jnp.einsum("hp,hpl->hl", weights, vandermonde)


def _s4d_kernel_reference(lam_bar_exponent, lam_bar, weights, length):
    """The impulse response ``C Abar^l Bbar``: the state ``Bbar`` multiplied by ``Abar`` once per lag."""
    del lam_bar_exponent

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
      impl: ``"reference"`` (the impulse response, on :func:`zero_order_hold`'s reference),
        ``"xla"`` (Vandermonde) or ``"auto"`` (xla).

    Returns:
      ``[H, L]`` float32 (float64 for complex128 inputs).

    Example::

        lam = jnp.full((4, 8), -0.5 + 1j)  # [H, P]
        kernel = s4d_kernel(lam, jnp.ones_like(lam), jnp.ones_like(lam), jnp.full((4,), 0.1), 64)  # [4, 64]
    """
    _check_modes("s4d_kernel", step, lam=lam, b=b, c=c)
    require_positive_int("s4d_kernel", "length", length)
    impl = resolve_impl_name("s4d_kernel", impl, _S4D_IMPLEMENTATIONS)
    lam_bar, gain = zero_order_hold(lam, step[:, None], impl=impl)  # [H, P]: B_bar = gain B
    kernel = _S4D_IMPLEMENTATIONS[impl](step[:, None] * lam, lam_bar, c * b * gain, length)
    return (2.0 if conjugate_pairs else 1.0) * kernel.real


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
    ``Abar = (I - dt/2 A)^{-1} (I + dt/2 A)``, ``Bbar = (I - dt/2 A)^{-1} dt B``, ``A = Lambda - P Q^*``
    (:func:`s4_discrete_system`'s reference)."""
    omega = _roots_of_unity(length, lam.dtype)

    def per_feature(lam, p, q, b, c_tilde, dt):
        a_bar, b_bar = s4_discrete_system(lam, p, q, b, dt, impl="reference")
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


def _s4_discrete_system_xla(lam, p, q, b, step):
    lam, p, q, b = _with_conjugates(lam, p, q, b)
    a = jnp.diag(lam) - jnp.outer(p, q.conj())
    eye = jnp.eye(lam.shape[0], dtype=lam.dtype)
    backward = eye - 0.5 * step * a
    return jnp.linalg.solve(backward, eye + 0.5 * step * a), jnp.linalg.solve(backward, step * b)


def _s4_discrete_system_reference(lam, p, q, b, step):
    """The definition, entry by entry: ``A[i, j] = lam_i [i = j] - p_i conj(q_j)`` over the stored
    modes and their conjugates, then ``Abar = inv(I - dt/2 A) (I + dt/2 A)``, ``Bbar = inv(I - dt/2 A) dt B``."""
    full = lambda x: jnp.concatenate([x, jnp.conj(x)])  # noqa: E731
    lam, p, q, b = full(lam), full(p), full(q), full(b)
    eye = jnp.eye(lam.shape[0], dtype=lam.dtype)
    a = eye * lam[None, :] - p[:, None] * jnp.conj(q)[None, :]
    inverse = jnp.linalg.inv(eye - step / 2 * a)
    return (jnp.matmul(inverse, eye + step / 2 * a, precision=_HIGHEST),
            jnp.matmul(inverse, step * b, precision=_HIGHEST))


_SYSTEM_IMPLEMENTATIONS = {"reference": _s4_discrete_system_reference, "xla": _s4_discrete_system_xla}


def s4_discrete_system(lam, p, q, b, step, *, impl: str = "auto"):
    """The full ``N x N`` bilinear system of one feature: ``(Abar [N, N], Bbar [N])`` from the stored
    halves ``[P]`` (for :meth:`jaxattn.nn.S4.step` and :func:`s4_c_tilde`), with
    ``A = Lambda - P Q^*``: ``Abar = (I - dt/2 A)^{-1} (I + dt/2 A)``, ``Bbar = (I - dt/2 A)^{-1} dt B``.
    ``impl``: ``"xla"`` (linear solves; ``"auto"``) or ``"reference"`` (the explicit inverse).

    Example::

        lam = jnp.array([-0.5 + 1j, -0.5 + 2j])  # [P]: N = 4 with the conjugates
        a_bar, b_bar = s4_discrete_system(lam, lam * 0, lam * 0, jnp.ones(2, complex), 0.1)  # [4, 4], [4]
    """
    return resolve_impl("s4_discrete_system", impl, _SYSTEM_IMPLEMENTATIONS)(lam, p, q, b, step)


def _c_tilde_xla(a_bar, c_full, length):
    power = jnp.linalg.matrix_power(a_bar, length)
    return c_full @ (jnp.eye(power.shape[0], dtype=power.dtype) - power)


def _c_tilde_reference(a_bar, c_full, length):
    """``C - C Abar^L`` with ``C Abar^L`` by ``L`` successive products of the row ``C`` with ``Abar``."""
    c_power = jax.lax.fori_loop(0, length, lambda _, row: jnp.matmul(row, a_bar, precision=_HIGHEST), c_full)
    return c_full - c_power


_C_TILDE_IMPLEMENTATIONS = {"reference": _c_tilde_reference, "xla": _c_tilde_xla}


def s4_c_tilde(lam, p, q, b, c, step, length, *, impl: str = "auto"):
    """``C~ = C (I - Abar^L)`` per feature (``[H, P]`` stored halves in, ``[H, P]`` out): the
    parameterisation in which the generating function of the first L kernel taps is the resolvent.
    ``impl``: ``"xla"`` (``Abar^L`` by squaring; ``"auto"``) or ``"reference"`` (``L`` products, on
    :func:`s4_discrete_system`'s reference).

    Example::

        lam = jnp.full((4, 2), -0.5 + 1j)  # [H, P]
        c_tilde = s4_c_tilde(lam, lam * 0, lam * 0, lam / lam, lam / lam, jnp.full((4,), 0.1), 64)  # [4, 2]
    """
    impl = resolve_impl_name("s4_c_tilde", impl, _C_TILDE_IMPLEMENTATIONS)

    def per_feature(lam, p, q, b, c, dt):
        a_bar, _ = s4_discrete_system(lam, p, q, b, dt, impl=impl)
        (c_full,) = _with_conjugates(c)
        return _C_TILDE_IMPLEMENTATIONS[impl](a_bar, c_full, length)[: lam.shape[0]]

    return jax.vmap(per_feature)(lam, p, q, b, c, step)


def _c_from_c_tilde_xla(a_bar, c_tilde_full, length):
    """``C (I - Abar^L) = C~`` solved for ``C``, with ``Abar^L`` by squaring."""
    power = jnp.linalg.matrix_power(a_bar, length)
    return jnp.linalg.solve((jnp.eye(power.shape[0], dtype=power.dtype) - power).T, c_tilde_full)


def _c_from_c_tilde_reference(a_bar, c_tilde_full, length):
    """``C~ inv(I - Abar^L)`` with ``Abar^L`` by ``L`` successive products and the explicit inverse."""
    eye = jnp.eye(a_bar.shape[0], dtype=a_bar.dtype)
    power = jax.lax.fori_loop(0, length, lambda _, m: jnp.matmul(m, a_bar, precision=_HIGHEST), eye)
    return jnp.matmul(c_tilde_full, jnp.linalg.inv(eye - power), precision=_HIGHEST)


_C_FROM_C_TILDE_IMPLEMENTATIONS = {"reference": _c_from_c_tilde_reference, "xla": _c_from_c_tilde_xla}


def s4_c_from_c_tilde(a_bar: jax.Array, c_tilde: jax.Array, length: int, *, impl: str = "auto") -> jax.Array:
    """S4's read-out ``C = C~ (I - Abar^L)^{-1}`` per feature, the inverse of :func:`s4_c_tilde`: the
    ``C`` of the recurrent form ``x_k = Abar x_{k-1} + Bbar u_k``, ``y_k = Re(C x_k)`` whose first
    ``L`` outputs equal the convolution with the kernel that ``C~`` parameterises.

    Args:
      a_bar: ``Abar`` ``[H, N, N]``, the full system of each feature (:func:`s4_discrete_system`,
        vmapped over features), its state the ``P = N/2`` stored modes followed by their conjugates.
      c_tilde: ``C~`` ``[H, P]``, one of each conjugate pair (as :func:`s4_kernel` takes it).
      length: L, the kernel length ``C~`` refers to.
      impl: ``"xla"`` (``Abar^L`` by squaring and a linear solve; ``"auto"``) or ``"reference"``
        (``L`` products and the explicit inverse).

    Returns:
      ``C`` ``[H, N]`` complex, over the stored modes and their conjugates (the state's layout).

    Example::

        lam = jnp.full((4, 2), -0.5 + 1j)  # [H, P]
        a_bar, _ = jax.vmap(s4_discrete_system)(lam, lam * 0, lam * 0, lam / lam, jnp.full((4,), 0.1))
        c = s4_c_from_c_tilde(a_bar, lam / lam, 64)  # [4, 4]
    """
    require_rank("s4_c_from_c_tilde", "a_bar", a_bar, "H, N, N")
    require_rank("s4_c_from_c_tilde", "c_tilde", c_tilde, "H, P")
    features, modes = c_tilde.shape
    if a_bar.shape != (features, 2 * modes, 2 * modes):
        raise ValueError(f"s4_c_from_c_tilde: `a_bar` must be [H, N, N] = {(features, 2 * modes, 2 * modes)} "
                         f"(N = 2P for `c_tilde` [H, P] = {c_tilde.shape}), got {a_bar.shape}")
    require_positive_int("s4_c_from_c_tilde", "length", length)
    solve = resolve_impl("s4_c_from_c_tilde", impl, _C_FROM_C_TILDE_IMPLEMENTATIONS)
    (c_tilde_full,) = _with_conjugates(c_tilde)  # [H, N]
    return jax.vmap(lambda a, ct: solve(a, ct, length))(a_bar, c_tilde_full)

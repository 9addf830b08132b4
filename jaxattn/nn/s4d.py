"""S4D: the diagonal structured state space layer (Gu, Gupta, Goel, Re 2022).

docs/ssm.md#s4d. Each of the H features runs its own single-input system with P = N/2
complex modes (one of each conjugate pair): ``x_k = Abar x_{k-1} + Bbar u_k``,
``y_k = 2 Re(C x_k) + D u_k``, ZOH ``Abar = exp(dt A)``, ``Bbar = (Abar - 1)/A B``. The layer runs
as the convolution ``y = K * u + D u`` by FFT (:func:`jaxattn.ops.s4d_kernel`,
:func:`jaxattn.ops.padded_fft_convolution`) or as the recurrence through
:func:`jaxattn.ops.diagonal_scan`; ``step`` is one step of that scan. Parameters as in the S4D
reference code: ``log_A_real``, ``A_imag`` ``[H, P]``, ``B``, ``C`` ``[H, P, 2]`` (real, imaginary),
``D [H]``, ``log_step [H]``.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.nn.hippo import hippo_legs_dplr, hippo_legs_nplr
from jaxattn.nn.ptd import hippo_legs_ptd
from jaxattn.nn.registry import SequenceMixer, register_mixer
from jaxattn.nn.ssm_parameters import per_feature_ssm
from jaxattn.ops import diagonal_scan, padded_fft_convolution, s4d_kernel, zero_order_hold
from jaxattn.ops.segments import state_resets
from jaxattn.parallel.sequence import scan_states

SPECTRA = ("lin", "inv", "legs", "real", "ptd")
MODES = ("convolution", "recurrence")


def s4d_spectrum(kind: str, state_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A [N/2], B [N/2])`` complex128 of an S4D initial spectrum, for n = 0..N/2-1:

    * ``lin``: ``-1/2 + i pi n`` (B = 1);
    * ``inv``: ``-1/2 + i (N/pi)(N/(2n+1) - 1)`` (B = 1);
    * ``legs``: the diagonal part of HiPPO-LegS's DPLR form and its ``B`` in that basis;
    * ``real``: ``-(n+1)`` (B = 1);
    * ``ptd``: S4-PTD, all N eigenvalues of the perturbed HiPPO-LegS (no conjugate pairs,
      docs/ssm.md#ptd) and ``B~ = V^-1 B``: ``(A [N], B [N])``.
    """
    if state_size < 2 or state_size % 2:
        raise ValueError(f"S4D: state_size must be even and >= 2 (conjugate pairs), got {state_size}")
    n = np.arange(state_size // 2)
    ones = np.ones(state_size // 2, np.complex128)
    if kind == "lin":
        return -0.5 + 1j * np.pi * n, ones
    if kind == "inv":
        return -0.5 + 1j * (state_size / np.pi) * (state_size / (2 * n + 1) - 1), ones
    if kind == "legs":
        lam, _, b, _ = hippo_legs_dplr(state_size)
        return lam, b
    if kind == "real":
        return -(n + 1.0) + 0j, ones
    if kind == "ptd":
        lam, _, v_inv = hippo_legs_ptd(state_size)
        return lam, v_inv @ hippo_legs_nplr(state_size)[2]
    raise ValueError(f"S4D: spectrum={kind!r} is not one of {SPECTRA}")


@register_mixer("s4d")
class S4D(SequenceMixer):
    """S4D sequence mixer ``[B, L, H] -> [B, L, H]``.

    Attributes:
      state_size: N (P = N/2 complex modes per feature; N for the ``ptd`` spectrum, which has no
        conjugate pairs and reads ``Re(C x)`` instead of ``2 Re(C x)``).
      spectrum: the initial ``A`` and ``B``: ``"lin"``, ``"inv"``, ``"legs"`` or ``"real"`` (:func:`s4d_spectrum`).
      dt_min, dt_max: range of the initial timescales (log-uniform, one per feature).
      causal: True (the default) for the causal kernel alone; False for the bidirectional layer,
        which adds an anti-causal kernel read out by ``C_reverse``: ``y_t`` also sums
        ``K'[s - t - 1] u_s`` over ``s > t``.
      mode: ``"convolution"`` (FFT, padded to 2L) or ``"recurrence"`` (``diagonal_scan``).
      scan_impl: ``impl`` of :func:`jaxattn.ops.diagonal_scan` in the recurrence (sequence parallel
        under a mesh with ``sequence`` shards, :func:`jaxattn.parallel.sequence.scan_states`).

    ``segment_ids [B, L]`` (integers): the recurrence resets its state at every segment start
    (packed sequences). A convolution cannot, so there the tokens outside the segment of a
    sequence's first token are taken as padding (zero inputs and outputs): exact for one sequence
    followed by padding, the classifier's layout; packed sequences need ``mode="recurrence"``.

    ``VARIANTS``: ``recurrence``, ``bidirectional`` (``causal=False``) and ``lin`` (S4D-Lin's spectrum).

    Example::

        layer = S4D(state_size=16, causal=False)                    # bidirectional
        x = jnp.ones((2, 64, 8))                                    # [B, L, H]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 8]
    """

    VARIANTS = {"recurrence": dict(mode="recurrence"), "bidirectional": dict(causal=False),
                "lin": dict(spectrum="lin")}

    state_size: int = 64
    spectrum: str = "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    causal: bool = True
    mode: str = "convolution"
    scan_impl: str = "auto"

    @property
    def _pairs_factor(self) -> float:
        """2: each stored mode stands for a conjugate pair; 1 for PTD's spectrum, which has none."""
        return 1.0 if self.spectrum == "ptd" else 2.0

    @nn.compact
    def discrete_system(self, features: int):
        """Creates or reads the parameters; returns ``(A, B, step, Cs, D)`` with ``A``, ``B`` and each
        ``C`` ``[H, P]`` complex, ``step [H]`` and ``D [H]``."""
        if self.mode not in MODES:
            raise ValueError(f"S4D: mode={self.mode!r} is not one of {MODES}")
        lam0, b0 = s4d_spectrum(self.spectrum, self.state_size)
        lam, vectors, cs, step, d = per_feature_ssm(self, features, lam0, {"B": b0}, a_names=("log_A_real", "A_imag"),
                                                    causal=self.causal, dt_min=self.dt_min,
                                                    dt_max=self.dt_max)
        return lam, vectors["B"], step, cs, d

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        """``x [B, L, H] -> y [B, L, H]``."""
        del train
        self.check_sequence(x, segment_ids)
        lam, b, step, cs, d = self.discrete_system(x.shape[-1])
        u = x.astype(jnp.float32)
        if self.mode == "recurrence":
            y, _ = self._recurrence(u, lam, b, step, cs, segment_ids)
        else:
            kernels = [s4d_kernel(lam, b, c, step, x.shape[1], self._pairs_factor == 2.0) for c in cs]
            y, u = padded_fft_convolution(u, kernels, segment_ids)
        return (y + d * u).astype(x.dtype)

    def _recurrence(self, u, lam, b, step, cs, segment_ids, h0=None):
        """The same map as the convolution, by ``diagonal_scan`` over ``[B, L, H, P]`` states from
        ``h0 [B, H, P]`` (zeros when None); returns ``(y [B, L, H]`` without ``D u``, the last state)."""
        lam_bar, gain = zero_order_hold(lam, step[:, None])  # [H, P]
        bu = u[..., None] * (gain * b)  # [B, L, H, P]

        def transitions(reverse: bool):
            a = jnp.broadcast_to(lam_bar, (1, 1, *lam_bar.shape))
            if segment_ids is None:
                return a
            return jnp.where(state_resets(segment_ids, reverse)[..., None, None], 0.0, a)

        if h0 is None:  # a whole sequence: sequence parallel under a mesh with sequence shards
            states = scan_states(transitions(False), bu, impl=self.scan_impl)
            last = states[:, -1]
        else:
            states, last = diagonal_scan(transitions(False), bu, h0=h0, impl=self.scan_impl)
        y = self._pairs_factor * jnp.einsum("blhp,hp->blh", states, cs[0]).real
        if not self.causal:
            # r_t = sum_{s >= t} Abar^{s-t} Bbar u_s; the output reads r_{t+1} (kernel lags from s = t + 1).
            states = scan_states(transitions(True), bu, reverse=True, impl=self.scan_impl)
            after = jnp.concatenate([states[:, 1:], jnp.zeros_like(states[:, :1])], axis=1)
            if segment_ids is not None:  # a state from the next segment does not reach back
                after = jnp.where(state_resets(segment_ids, True)[..., None, None], 0.0, after)
            y = y + self._pairs_factor * jnp.einsum("blhp,hp->blh", after, cs[1]).real
        return y, last

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> jax.Array:
        """Zero state ``[batch, H, P]`` complex64 for :meth:`step`; every feature has its own modes,
        so ``features`` (H, the model width) is required."""
        if features is None:
            raise ValueError("S4D.init_carry: pass `features` (H): each feature has its own state")
        modes = int(self.state_size // self._pairs_factor)
        return jnp.zeros((batch_size, features, modes), jnp.complex64)

    def step(self, carry: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token: ``carry [B, H, P]``, ``x_t [B, H]`` -> ``(carry, y_t [B, H])``; equals :meth:`__call__`."""
        self.require_causal("S4D.step")
        lam, b, step, cs, d = self.discrete_system(x_t.shape[-1])
        u = x_t.astype(jnp.float32)
        y, carry = self._recurrence(u[:, None], lam, b, step, cs, None, h0=carry)  # one step of the scan
        return carry, (y[:, 0] + d * u).astype(x_t.dtype)

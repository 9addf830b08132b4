"""S5: one MIMO state space layer with a complex diagonal state matrix (Smith, Warrington, Linderman 2023).

docs/ssm.md#s5. Parameter names and shapes follow the S5 reference code so that its
checkpoints and hyperparameters port: ``Lambda_re [P]``, ``Lambda_im [P]``, ``B [P, H, 2]``,
``C [H, P, 2]`` (or ``C1``, ``C2`` when bidirectional: ``causal=False``), ``D [H]``,
``log_step [P, 1]``, where the trailing 2 holds (real, imaginary) parts and ``P = N/2`` with
conjugate symmetry, else ``N``.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.nn.discretization import DISCRETIZATIONS
from jaxattn.nn.hippo import block_diagonal_hippo
from jaxattn.nn.ptd import block_diagonal_ptd
from jaxattn.nn.registry import SequenceMixer, register_mixer
from jaxattn.ops.segments import state_resets
from jaxattn.parallel.sequence import scan_states

_MAX_STABLE_REAL_PART = -1e-4
C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
SSM_INITS = ("hippo", "ptd")


def _as_pairs(z: jax.Array) -> jax.Array:
    """complex ``[...]`` -> real ``[..., 2]`` (real, imaginary)."""
    return jnp.stack([z.real, z.imag], axis=-1)


def _from_pairs(pairs: jax.Array) -> jax.Array:
    """real ``[..., 2]`` -> complex ``[...]``."""
    return pairs[..., 0] + 1j * pairs[..., 1]


def input_matrix_init(v_inv: np.ndarray):
    """``B~ = V^-1 B`` with ``B`` lecun-normal over the real ``[N, H]`` matrix; returns ``[P, H, 2]``."""

    def init(key, shape, dtype=jnp.float32):
        state_size, features = v_inv.shape[1], shape[1]
        b = jax.nn.initializers.lecun_normal()(key, (state_size, features), jnp.float32)
        return _as_pairs(jnp.asarray(v_inv, jnp.complex64) @ b).astype(dtype)

    return init


def output_matrix_init(kind: str, v: np.ndarray):
    """Initialiser of ``C~ [H, P, 2]`` (``kind`` as in the S5 reference code).

    * ``trunc_standard_normal``: each row of the real ``C [H, N]`` truncated normal with variance
      ``1/N`` (complex: real and imaginary parts), then ``C~ = C V``.
    * ``lecun_normal``: lecun normal over ``[H, N, 2]`` (variance ``1/(N H)``), then ``C~ = C V``.
    * ``complex_normal``: ``C~`` directly normal with variance 1/2 per part (no ``V``).
    """

    def init(key, shape, dtype=jnp.float32):
        features = shape[0]
        state_size = v.shape[0]
        if kind == "complex_normal":
            return jax.random.normal(key, shape, dtype) * np.sqrt(0.5)
        if kind == "trunc_standard_normal":
            row_init = jax.nn.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
            )
            c = row_init(key, (features, state_size, 2), jnp.float32)
        else:  # lecun_normal
            c = jax.nn.initializers.lecun_normal()(key, (features, state_size, 2), jnp.float32)
        return _as_pairs(_from_pairs(c) @ jnp.asarray(v, jnp.complex64)).astype(dtype)

    return init


def log_step_init(dt_min: float, dt_max: float):
    """``log dt`` uniform in ``[log dt_min, log dt_max]`` for any shape (S5: ``log_step [P, 1]``, one
    timescale per state; DeltaNet: its decay rates and time steps)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, np.log(dt_min), np.log(dt_max))

    return init


@register_mixer("s5")
class S5(SequenceMixer):
    """S5 sequence mixer ``[B, L, H] -> [B, L, H]``.

    ``x_k = Lbar * x_{k-1} + Bbar u_k`` (complex diagonal, associative scan);
    ``y_k = 2 Re(C~ x_k) + D * u_k`` (factor 2 only with conjugate symmetry).

    Attributes:
      state_size: N, the state size of the real system (P = N/2 complex states with ``conj_sym``).
      blocks: J, number of HiPPO-N blocks of size N/J in the initial spectrum.
      conj_sym: keep one of each conjugate pair of eigenvalues.
      discretization: ``"zoh"`` or ``"bilinear"``.
      causal: True (the default) for the forward scan alone; False for the bidirectional layer,
        which adds a reverse scan read out by ``C2`` (``C1`` reads the forward one).
      clip_eigs: force ``Re(Lambda) <= -1e-4`` (stable for any learning rate).
      C_init: ``"trunc_standard_normal"``, ``"lecun_normal"`` or ``"complex_normal"``.
      dt_min, dt_max: range of the initial timescales.
      step_rescale: multiplies every timescale (e.g. to run at another sampling rate).
      scan_impl: ``impl`` of :func:`jaxattn.ops.diagonal_scan` (sequence parallel under a mesh with
        ``sequence`` shards, :func:`jaxattn.parallel.sequence.scan_states`).
      ssm_init: ``"hippo"`` (HiPPO-N blocks, unitary ``V``) or ``"ptd"`` (S5-PTD, docs/ssm.md#ptd:
        blocks of the perturb-then-diagonalise HiPPO-LegS spectrum from
        :func:`jaxattn.nn.ptd.block_diagonal_ptd`, computed once per block size and cached on disk).
        PTD spectra are not conjugate symmetric, so ``"ptd"`` requires ``conj_sym=False``.

    ``VARIANTS``: ``bidirectional`` (``causal=False``), ``bilinear`` (bilinear discretisation, no
    conjugate symmetry) and ``blocks`` (four HiPPO blocks, clipped eigenvalues).

    Example::

        layer = S5(state_size=16, blocks=2, causal=False)           # bidirectional
        x = jnp.ones((2, 64, 8))                                    # [B, L, H]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 8]
    """

    VARIANTS = {
        "bidirectional": dict(causal=False),
        "bilinear": dict(discretization="bilinear", conj_sym=False),
        "blocks": dict(blocks=4, clip_eigs=True),
    }

    state_size: int = 64
    blocks: int = 1
    conj_sym: bool = True
    discretization: str = "zoh"
    causal: bool = True
    clip_eigs: bool = False
    C_init: str = "trunc_standard_normal"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    step_rescale: float = 1.0
    scan_impl: str = "auto"
    ssm_init: str = "hippo"

    @property
    def num_states(self) -> int:
        """P, the number of complex states stored."""
        return self.state_size // 2 if self.conj_sym else self.state_size

    def _check_options(self):
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"S5: discretization={self.discretization!r} is not one of {sorted(DISCRETIZATIONS)}")
        if self.C_init not in C_INITS:
            raise ValueError(f"S5: C_init={self.C_init!r} is not one of {C_INITS}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"S5: need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if self.ssm_init not in SSM_INITS:
            raise ValueError(f"S5: ssm_init={self.ssm_init!r} is not one of {SSM_INITS}")
        if self.ssm_init == "ptd" and self.conj_sym:
            raise ValueError("S5: ssm_init='ptd' has no conjugate-symmetric spectrum; set conj_sym=False")

    def _param(self, name: str, init, shape: tuple[int, ...], axes: tuple[str | None, ...]) -> jax.Array:
        """A parameter annotated with logical axis names (for sharding)."""
        return self.param(name, nn.with_logical_partitioning(init, axes), shape)

    @nn.compact
    def discrete_system(self, features: int):
        """Creates (at init) or reads the parameters; returns the discretised system.

        Returns:
          ``(Lambda_bar [P], B_bar [P, H], C~ list of [H, P] (two when not causal), D [H])``.
        """
        self._check_options()
        if self.ssm_init == "ptd":
            lam0, v, v_inv = block_diagonal_ptd(self.state_size, self.blocks)
        else:
            lam0, v, v_inv = block_diagonal_hippo(self.state_size, self.blocks, self.conj_sym)
        p = self.num_states
        lambda_re = self._param("Lambda_re", lambda *_: jnp.asarray(lam0.real, jnp.float32), (p,), ("ssm_state",))
        lambda_im = self._param("Lambda_im", lambda *_: jnp.asarray(lam0.imag, jnp.float32), (p,), ("ssm_state",))
        b = self._param("B", input_matrix_init(v_inv), (p, features, 2), ("ssm_state", "embed", None))
        c_init = output_matrix_init(self.C_init, v)
        c_names = ("C",) if self.causal else ("C1", "C2")
        cs = [self._param(name, c_init, (features, p, 2), ("embed", "ssm_state", None)) for name in c_names]
        d = self._param("D", jax.nn.initializers.normal(1.0), (features,), ("embed",))
        log_step = self._param("log_step", log_step_init(self.dt_min, self.dt_max), (p, 1), ("ssm_state", None))

        if self.clip_eigs:
            lambda_re = jnp.minimum(lambda_re, _MAX_STABLE_REAL_PART)
        lam = lambda_re + 1j * lambda_im
        step = self.step_rescale * jnp.exp(log_step[:, 0])
        lam_bar, b_bar = DISCRETIZATIONS[self.discretization](lam, _from_pairs(b), step)
        return lam_bar, b_bar, [_from_pairs(c) for c in cs], d

    def _read_out(self, cs: list[jax.Array], states: list[jax.Array]) -> jax.Array:
        """``sum_k Re(C~_k x_k)`` (times 2 with conjugate symmetry): ``[..., P]`` each -> ``[..., H]``.

        One real matmul over ``[Re x_1, Im x_1, Re x_2, ...]`` ``[..., 2 K P]``, since
        ``Re(C~ x) = Re C~ Re x - Im C~ Im x``: half the products of a complex matmul whose imaginary
        part is thrown away, and both directions of the bidirectional layer in one product.
        """
        factor = 2.0 if self.conj_sym else 1.0
        weights = jnp.concatenate([w for c in cs for w in (factor * c.real, -factor * c.imag)], axis=-1)
        parts = jnp.concatenate([part for x in states for part in (x.real, x.imag)], axis=-1)
        return jnp.einsum("...k,hk->...h", parts, weights)

    @staticmethod
    def _drive(x: jax.Array, b_bar: jax.Array) -> jax.Array:
        """``B_bar u`` ``[..., H] -> [..., P]`` complex, as one real matmul of the real input with
        ``[Re B_bar; Im B_bar]`` (a complex einsum would promote ``u`` and do twice the products)."""
        parts = jnp.einsum("...h,kh->...k", x.astype(jnp.float32), jnp.concatenate([b_bar.real, b_bar.imag]))
        real, imag = jnp.split(parts, 2, axis=-1)
        return jax.lax.complex(real, imag)

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        """``x [B, L, H] -> y [B, L, H]``; ``segment_ids [B, L]`` resets the state at each boundary."""
        del train
        self.check_sequence(x, segment_ids)
        lam_bar, b_bar, cs, d = self.discrete_system(x.shape[-1])
        bu = self._drive(x, b_bar)

        def transitions(reverse: bool) -> jax.Array:
            a = jnp.broadcast_to(lam_bar, (1, 1, lam_bar.shape[0]))
            if segment_ids is None:
                return a
            return jnp.where(state_resets(segment_ids, reverse)[..., None], 0.0, a)

        # Without segment resets the transition keeps its time axis of size 1: the scan's backward
        # then runs with the same constant transition (jaxattn.ops.diagonal_scan, impl "xla").
        states = [scan_states(transitions(False), bu, impl=self.scan_impl)]
        if not self.causal:
            states.append(scan_states(transitions(True), bu, reverse=True, impl=self.scan_impl))
        return (self._read_out(cs, states) + d * x).astype(x.dtype)

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> jax.Array:
        """Zero state ``[batch, P]`` complex64 for :meth:`step` (one state for all ``features``)."""
        del features
        return jnp.zeros((batch_size, self.num_states), jnp.complex64)

    def step(self, carry: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token: ``carry [B, P]``, ``x_t [B, H]`` -> ``(carry, y_t [B, H])``; equals :meth:`__call__`."""
        self.require_causal("S5.step")
        lam_bar, b_bar, cs, d = self.discrete_system(x_t.shape[-1])
        carry = lam_bar * carry + self._drive(x_t, b_bar)
        return carry, (self._read_out(cs[:1], [carry]) + d * x_t).astype(x_t.dtype)

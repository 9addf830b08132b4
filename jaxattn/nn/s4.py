"""S4: the structured state space layer with a diagonal-plus-low-rank state matrix (Gu, Goel, Re 2022).

docs/ssm.md#s4. Each of the H features runs ``x' = A x + B u``, ``y = Re(C x) + D u`` with
``A = Lambda - P P^*``, initialised to HiPPO-LegS in the eigenbasis of its normal part
(:func:`jaxattn.nn.hippo.hippo_legs_dplr`), discretised bilinearly. The layer is the convolution
``y = K * u + D u`` with S4's kernel (:func:`jaxattn.ops.s4_kernel`) applied by
FFT; ``step`` runs the recurrence on the full ``N x N`` discrete matrix. As in S4, the parameter
``C`` is ``C~ = C (I - Abar^L)`` for the kernel length ``L = l_max``.
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.hippo import hippo_legs_dplr
from jaxattn.nn.registry import SequenceMixer, nan_past_capacity, register_mixer
from jaxattn.nn.ssm_parameters import per_feature_ssm
from jaxattn.ops import padded_fft_convolution, s4_c_from_c_tilde, s4_discrete_system, s4_kernel


class S4Carry(NamedTuple):
    """Decoding state: ``state [B, H, N]`` complex64 (every mode and its conjugate) and
    ``length [B]``, the tokens seen (the layer is defined for ``l_max`` of them)."""

    state: jax.Array
    length: jax.Array


@register_mixer("s4")
class S4(SequenceMixer):
    """S4 sequence mixer ``[B, L, H] -> [B, L, H]``.

    Attributes:
      state_size: N (P = N/2 stored modes per feature, each standing for a conjugate pair).
      l_max: the kernel length L (sequences up to it; ``C~`` refers to it): ``step`` decodes L tokens
        and returns NaN after them, as ``__call__`` refuses longer inputs. None: the input's length,
        and no ``step``.
      dt_min, dt_max: range of the initial timescales (log-uniform, one per feature).
      causal: True (the default) for the causal kernel alone; False for the bidirectional layer,
        which adds an anti-causal kernel read out by ``C_reverse``.
      kernel_impl: ``impl`` of :func:`jaxattn.ops.s4_kernel`.

    ``segment_ids`` mark padding (tokens outside the segment of a sequence's first token get zero
    inputs and outputs), exact for one sequence followed by padding; a convolution cannot restart
    at packed-sequence boundaries.

    ``VARIANTS``: ``l_max`` (a 16-tap kernel, decodable) and ``bidirectional`` (``causal=False``).

    Example::

        layer = S4(state_size=16, l_max=64)
        x = jnp.ones((2, 64, 8))                                    # [B, L, H]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 8]
    """

    VARIANTS = {"l_max": dict(l_max=16), "bidirectional": dict(causal=False)}

    state_size: int = 64
    l_max: Optional[int] = None
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    causal: bool = True
    kernel_impl: str = "auto"

    @property
    def decode_capacity(self) -> int:
        return 0 if self.l_max is None else self.l_max

    @nn.compact
    def system(self, features: int):
        """Creates or reads the parameters: ``(Lambda, P, B, [C~...], step [H], D [H])``, ``[H, P]`` complex."""
        lam0, p0, b0, _ = hippo_legs_dplr(self.state_size)
        lam, vectors, cs, step, d = per_feature_ssm(
            self, features, lam0, {"P": p0, "B": b0}, a_names=("log_Lambda_real", "Lambda_imag"),
            causal=self.causal, dt_min=self.dt_min, dt_max=self.dt_max,
        )
        return lam, vectors["P"], vectors["B"], cs, step, d

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        """``x [B, L, H] -> y [B, L, H]``."""
        del train
        self.check_sequence(x, segment_ids)
        length = x.shape[1]
        if self.l_max is not None and length > self.l_max:
            raise ValueError(f"S4: sequence length {length} exceeds l_max={self.l_max}")
        lam, p, b, cs, step, d = self.system(x.shape[-1])
        kernel_length = length if self.l_max is None else self.l_max
        kernels = [s4_kernel(lam, p, p, b, c, step, kernel_length, impl=self.kernel_impl)[:, :length] for c in cs]
        y, u = padded_fft_convolution(x.astype(jnp.float32), kernels, segment_ids)
        return (y + d * u).astype(x.dtype)

    def _recurrent_system(self, features: int):
        """Per feature the full discrete system: ``Abar [H, N, N]``, ``Bbar [H, N]`` and the read-out
        ``C = C~ (I - Abar^L)^{-1}`` ``[H, N]`` (stored modes and their conjugates,
        :func:`jaxattn.ops.s4_c_from_c_tilde`), and ``D [H]``."""
        if self.l_max is None:
            raise ValueError("S4.step: set l_max, the kernel length that C~ refers to")
        lam, p, b, cs, step, d = self.system(features)
        a_bar, b_bar = jax.vmap(s4_discrete_system)(lam, p, p, b, step)
        return a_bar, b_bar, s4_c_from_c_tilde(a_bar, cs[0], self.l_max), d

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> S4Carry:
        """Zero :class:`S4Carry` (state ``[batch, H, N]``); needs ``features`` (H)."""
        if features is None:
            raise ValueError("S4.init_carry: pass `features` (H): each feature has its own state")
        return S4Carry(jnp.zeros((batch_size, features, self.state_size), jnp.complex64),
                       jnp.zeros((batch_size,), jnp.int32))

    def step(self, carry: S4Carry, x_t: jax.Array) -> tuple[S4Carry, jax.Array]:
        """One token: ``x_t [B, H]`` -> ``(carry, y_t [B, H])``; equals :meth:`__call__` for the
        first ``l_max`` tokens, NaN after them."""
        self.require_causal("S4.step")
        a_bar, b_bar, c, d = self._recurrent_system(x_t.shape[-1])
        u = x_t.astype(jnp.float32)
        state = jnp.einsum("hnm,bhm->bhn", a_bar, carry.state) + u[..., None] * b_bar
        y = jnp.einsum("hn,bhn->bh", c, state).real + d * u
        y = nan_past_capacity(y, carry.length, self.decode_capacity)
        return S4Carry(state.astype(jnp.complex64), carry.length + 1), y.astype(x_t.dtype)

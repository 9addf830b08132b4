"""The delta-rule mixer: DeltaNet, Gated DeltaNet and DeltaProduct in one layer.

``[B, L, d_model] -> [B, L, d_model]``. Per head, with ``n = householder_steps`` keys, values and
step sizes per token (see :func:`jaxattn.ops.delta_rule` and ``docs/delta_rule.md``):

    S_t = exp(g_t) S_{t-1};   S_t <- S_t + k_{t,j}^T beta_{t,j} (v_{t,j} - k_{t,j} S_t)   (j = 1..n)
    o_t = K^{-1/2} q_t S_t

The projections of q, k, v pass through the short causal convolution and SiLU (as fla's DeltaNet);
q and k are then L2-normalised per head, which makes each transition ``I - beta k^T k`` a contraction
with eigenvalues ``1`` and ``1 - beta``. ``beta = sigmoid(x W_beta)`` keeps them in ``[0, 1]``;
``negative_eigenvalues=True`` takes ``beta = 2 sigmoid(x W_beta)``, eigenvalues in ``[-1, 1]``, which
is what lets one layer track parity and (with ``n >= 2``) permutations. ``gated=True`` adds the
Mamba-2 decay ``g_t = -exp(A) softplus(x W_g + dt_bias)`` per head (Gated DeltaNet). The output is
RMS-normalised per head and, with ``output_gate``, multiplied by ``silu(x W_o)`` (Gated DeltaNet's
gated norm) before the output projection.
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattn.nn.blocks import dense
from jaxattn.nn.projections import output_projection, qkv_projections
from jaxattn.nn.registry import SequenceMixer, register_mixer
from jaxattn.nn.s5 import log_step_init
from jaxattn.nn.short_conv import zero_conv_history
from jaxattn.ops import delta_rule
from jaxattn.parallel.sequence import sequence_axis_size, sequence_parallel_delta_rule


class DeltaNetCarry(NamedTuple):
    """Decoding state: ``state [B, H, K, V]`` fp32 and the short convolution's last inputs."""

    state: jax.Array
    conv_history: jax.Array


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x / ||x||`` over the last axis, in fp32 (eps inside the root keeps a zero vector finite)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _softplus_inverse_init(low: float, high: float):
    """``dt_bias`` with ``softplus(dt_bias)`` log-uniform in ``[low, high]`` (Mamba-2's time steps)."""

    def init(key, shape, dtype=jnp.float32):
        dt = jnp.exp(log_step_init(low, high)(key, shape, dtype))
        return dt + jnp.log(-jnp.expm1(-dt))

    return init


# The pieces of a delta-rule layer, shared by DeltaNet and the Mixture-of-Memories mixer. Each is
# called from inside a module's ``@nn.compact`` method, so its dense layers and parameters are that
# module's children (``beta``, ``gate``, ``log_a``, ``dt_bias``, ``output_norm``, ...).


def delta_rule_inputs(q, k, v, *, head_dim: int, short_conv: int):
    """Projections ``[B, L, width]`` -> the op's rows: SiLU where no short convolution applied it
    (the convolution ends in SiLU), then q and k split into rows of ``head_dim`` and L2-normalised,
    ``[B, L, width / head_dim, head_dim]`` (fp32); v is returned as it is."""
    if not short_conv:
        q, k, v = jax.nn.silu(q), jax.nn.silu(k), jax.nn.silu(v)
    rows = lambda a: a.reshape(*a.shape[:2], -1, head_dim)  # noqa: E731
    return _l2_normalize(rows(q)), _l2_normalize(rows(k)), v


def delta_rule_betas(x: jax.Array, count: int, negative_eigenvalues: bool) -> jax.Array:
    """Step sizes ``[B, L, count]`` fp32 from the dense ``beta``: ``sigmoid(x W)`` in ``[0, 1]``, or
    ``2 sigmoid(x W)`` in ``[0, 2]`` with ``negative_eigenvalues``."""
    beta = jax.nn.sigmoid(dense(count, ("embed", "heads"), "beta")(x).astype(jnp.float32))
    return (2.0 if negative_eigenvalues else 1.0) * beta


def mamba2_log_decay(module: nn.Module, x: jax.Array, count: int) -> jax.Array:
    """Mamba-2's log decay ``g = -exp(A) softplus(x W_g + dt_bias)`` ``[B, L, count]`` (<= 0), with
    the parameters ``log_a``, ``dt_bias`` ``[count]`` of ``module`` and its dense ``gate``."""
    log_a = module.param("log_a", nn.with_logical_partitioning(log_step_init(1.0, 16.0), ("heads",)), (count,))
    dt_bias = module.param("dt_bias", nn.with_logical_partitioning(_softplus_inverse_init(1e-3, 0.1), ("heads",)),
                           (count,))
    dt = jax.nn.softplus(dense(count, ("embed", "heads"), "gate")(x).astype(jnp.float32) + dt_bias)
    return -jnp.exp(log_a) * dt


def run_delta_rule(q, k, v, beta, *, state: Optional[jax.Array], **options):
    """:func:`jaxattn.ops.delta_rule` from ``state`` (None: zeros), returning ``(o, final state)``;
    a whole sequence (``state`` None) under a mesh with ``sequence`` shards runs LASP-2 instead
    (:func:`jaxattn.parallel.sequence.sequence_parallel_delta_rule`), which returns no state (None)."""
    if state is None and sequence_axis_size() > 1:
        return sequence_parallel_delta_rule(q, k, v, beta, **options), None
    return delta_rule(q, k, v, beta, initial_state=state, output_final_state=True, **options)


def normalized_output(o: jax.Array, x: jax.Array, *, output_gate: bool) -> jax.Array:
    """Heads ``o [B, L, H, V]`` -> ``[B, L, d_model]``: RMS norm per head (``output_norm``), then the
    output projection, gated by ``silu(x W)`` with ``output_gate`` (Gated DeltaNet's gated norm)."""
    o = nn.RMSNorm(name="output_norm", scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (None,)))(o)
    return output_projection(o, x.shape[-1], gate_input=x if output_gate else None, dtype=x.dtype)


@register_mixer("delta_net")
class DeltaNet(SequenceMixer):
    """Delta-rule mixer ``[B, L, d_model] -> [B, L, d_model]`` with the mixer face (``__call__``,
    ``init_carry``, ``step`` on ``x_t [B, d_model]``).

    Attributes:
      num_heads, head_dim: H heads with keys of size K = ``head_dim``.
      value_dim: V per head (default ``head_dim``; Gated DeltaNet uses ``2 * head_dim``).
      householder_steps: n keys, values and betas per token (1: DeltaNet; more: DeltaProduct).
      negative_eigenvalues: ``beta in [0, 2]`` instead of ``[0, 1]``.
      gated: the Mamba-2 decay per token and head (Gated DeltaNet / Gated DeltaProduct).
      short_conv: width of the causal depthwise convolution on the q, k, v projections (0: none).
      output_gate: ``silu(x W)`` on the normalised output (Gated DeltaNet).
      chunk_size, impl: passed to :func:`jaxattn.ops.delta_rule`.

    Under a mesh with ``sequence`` shards (``jax.set_mesh``) a whole-sequence call runs LASP-2
    (:func:`jaxattn.parallel.sequence.sequence_parallel_delta_rule`).

    ``VARIANTS``: ``negative`` (DeltaNet with beta in [0, 2]), ``gated`` (Gated DeltaNet: decay and
    output gate), ``product`` (DeltaProduct with two Householder steps and negative eigenvalues).

    Example::

        layer = DeltaNet(num_heads=2, head_dim=16, gated=True, output_gate=True)  # Gated DeltaNet
        x = jnp.ones((2, 64, 32))                                   # [B, L, d_model]
        variables = layer.init(jax.random.key(0), x)
        y = layer.apply(variables, x)                               # [2, 64, 32]
    """

    VARIANTS = {
        "negative": dict(negative_eigenvalues=True),
        "gated": dict(gated=True, output_gate=True),
        "product": dict(householder_steps=2, negative_eigenvalues=True),
    }

    num_heads: int = 4
    head_dim: int = 32
    value_dim: Optional[int] = None
    householder_steps: int = 1
    negative_eigenvalues: bool = False
    gated: bool = False
    short_conv: int = 4
    output_gate: bool = False
    chunk_size: int = 64
    impl: str = "auto"

    def noncausal_options(self) -> dict:
        return {}

    @property
    def values(self) -> int:
        """V, the value size per head."""
        return self.head_dim if self.value_dim is None else self.value_dim

    def _channels(self) -> tuple[int, int, int]:
        """Widths of the q, k and v projections (k and v carry n rows per token)."""
        heads, n = self.num_heads, self.householder_steps
        return heads * self.head_dim, n * heads * self.head_dim, n * heads * self.values

    def _check_options(self):
        if not isinstance(self.householder_steps, int) or self.householder_steps < 1:
            raise ValueError(f"DeltaNet: householder_steps must be an int >= 1, got {self.householder_steps!r}")
        if self.short_conv < 0:
            raise ValueError(f"DeltaNet: short_conv must be >= 0 (0: none), got {self.short_conv}")

    @nn.compact
    def _mix(self, x, *, segment_ids=None, carry: Optional[DeltaNetCarry] = None, impl=None):
        """``x [B, L, d_model]`` -> (``[B, L, d_model]``, carry after the last token)."""
        self._check_options()
        batch, length = x.shape[:2]
        heads, dim, n = self.num_heads, self.head_dim, self.householder_steps
        (q, k, v), history = qkv_projections(x, self._channels(), short_conv=self.short_conv, segment_ids=segment_ids,
                                             conv_history=None if carry is None else carry.conv_history)
        q, k, v = delta_rule_inputs(q, k, v, head_dim=dim, short_conv=self.short_conv)
        k = k.reshape(batch, length * n, heads, dim)  # step j of token t at row t n + j
        v = v.reshape(batch, length * n, heads, self.values)
        beta = delta_rule_betas(x, n * heads, self.negative_eigenvalues).reshape(batch, length * n, heads)
        g = mamba2_log_decay(self, x, heads) if self.gated else None
        o, state = run_delta_rule(q, k, v, beta, g=g, householder_steps=n, segment_ids=segment_ids,
                                  chunk_size=self.chunk_size, impl=impl or self.impl,
                                  state=None if carry is None else carry.state)
        return normalized_output(o, x, output_gate=self.output_gate), DeltaNetCarry(state, history)

    def __call__(self, x: jax.Array, *, segment_ids: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        del train
        self.check_sequence(x, segment_ids, width="d_model")
        return self._mix(x, segment_ids=segment_ids)[0]

    def init_carry(self, batch_size: int, features: Optional[int] = None) -> DeltaNetCarry:
        """Zero state ``[B, H, K, V]`` fp32 and zero convolution history."""
        del features  # the state's size comes from the heads
        return DeltaNetCarry(
            jnp.zeros((batch_size, self.num_heads, self.head_dim, self.values), jnp.float32),
            zero_conv_history(batch_size, self.short_conv, sum(self._channels())),
        )

    def step(self, carry: DeltaNetCarry, x_t: jax.Array) -> tuple[DeltaNetCarry, jax.Array]:
        """One token ``x_t [B, d_model]``: the recurrence with ``carry`` as the state."""
        y, carry = self._mix(x_t[:, None], carry=carry, impl="reference")
        return carry, y[:, 0]

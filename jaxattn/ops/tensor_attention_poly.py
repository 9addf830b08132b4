"""Low-rank tensor attention (Alman & Song): polynomial features of exact monomials, linear in T.

docs/tensor_attention.md#low-rank. ``exp(x)`` with ``x = scale sum_l q_l k1_l k2_l`` is replaced by its degree-g
Taylor polynomial ``sum_{t <= g} x^t / t!``; every monomial factorises over the three tokens:

    ``x^t / t! = sum_{|a| = t} (scale^t / a!) q^a k1^a k2^a``  (multi-indices a over D),

so with features ``U1 = (scale^{|a|} / a!) q^a``, ``U2 = k1^a``, ``U3 = k2^a`` of rank
``r = C(D + g, g)`` the weights are ``U1 (U2 ⊘ U3)^T`` and the Khatri-Rao identity
``(U2 ⊘ U3)^T (V1 ⊘ V2) = (U2^T V1) .* (U3^T V2)`` gives

    ``out = U1 [(U2^T V1) .* (U3^T V2)] / U1 [(U2^T 1) .* (U3^T 1)]``,  cost ``O(T r Dv)``.

Causal: the sums become prefix sums, computed chunk by chunk (a scan over chunks carrying the two
``[r, Dv + 1]`` sums, cumulative sums inside a chunk). The approximation converges to exact
attention as g grows when the logits are bounded; ``r`` grows as ``D^g / g!``, so this is for small
D and low degree.

Implementations: ``"reference"`` forms the ``[T, T, T]`` polynomial weights ``sum_{t <= g} x^t / t!``
from the logits directly, without the features (cubic in T, the test oracle); ``"xla"`` uses the
features and the Khatri-Rao identity above, chunked.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.ops.checks import require_nonempty, require_positive_int, require_rank, require_scale
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.linear_attention_parts import normalized, with_normalizer_column

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=None)
def monomial_exponents(dim: int, degree: int) -> np.ndarray:
    """``[r, D]`` exponents of every monomial of total degree <= ``degree`` in ``dim`` variables."""
    rows = [np.zeros(dim, np.int32)]
    for total in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(dim), total):
            rows.append(np.bincount(np.array(combo), minlength=dim).astype(np.int32))
    return np.stack(rows)


def feature_rank(dim: int, degree: int) -> int:
    """``C(D + g, g)``."""
    return math.comb(dim + degree, degree)


def monomials(x: jax.Array, exponents: np.ndarray) -> jax.Array:
    """``[..., D] -> [..., r]``: ``prod_l x_l^{a_l}`` for every row ``a`` of ``exponents``.

    A monomial of degree <= g is a product of g factors, each a variable or the constant 1: with
    ``[x, 1]`` ``[..., D + 1]``, factor i of every monomial is picked by a one-hot matrix
    ``[D + 1, r]``, so the features are g small matrix products multiplied together (no gathers:
    their gradients would be scatters, slow on CPU)."""
    dim, degree = exponents.shape[1], int(exponents.sum(axis=1).max(initial=0))
    factors = np.full((exponents.shape[0], max(degree, 1)), dim)  # index D: the constant 1
    for row, exponent in enumerate(exponents):
        variables = np.repeat(np.arange(dim), exponent)
        factors[row, : variables.size] = variables
    with_one = jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], axis=-1)
    features = None
    for picks in factors.T:  # [r]: the variable of this factor in every monomial
        factor = jnp.matmul(with_one, jnp.asarray(np.eye(dim + 1)[:, picks], x.dtype), precision=_HIGHEST)
        features = factor if features is None else features * factor
    return features


def _features(q, k1, k2, degree: int, scale: float):
    exponents = monomial_exponents(q.shape[-1], degree)
    weights = np.array([scale ** a.sum() / np.prod([math.factorial(int(e)) for e in a]) for a in exponents], np.float32)
    return monomials(q, exponents) * weights, monomials(k1, exponents), monomials(k2, exponents)


def _reference(q, k1, k2, w1, w2, degree, scale, causal, chunk_size):
    """The definition, without features: the weights ``sum_{t <= g} x_ijk^t / t!`` of the logits
    ``x_ijk = scale sum_l q_il k1_jl k2_kl`` ``[B, H, T, T, T]`` (pairs ``j, k <= i`` when causal)
    against ``W1_j .* W2_k``: numerator and normaliser ``[B, T, H, Dv + 1]``."""
    del chunk_size
    logits = scale * jnp.einsum("bihl,bjhl,bkhl->bhijk", q, k1, k2, precision=_HIGHEST)
    weights = sum(logits**t / math.factorial(t) for t in range(degree + 1))
    if causal:
        position = jnp.arange(q.shape[1])
        weights = weights * ((position[None, :, None] <= position[:, None, None])
                             & (position[None, None, :] <= position[:, None, None]))
    return jnp.einsum("bhijk,bjhd,bkhd->bihd", weights, w1, w2, precision=_HIGHEST)


def _xla(q, k1, k2, w1, w2, degree, scale, causal, chunk_size):
    """The monomial features ``U1, U2, U3`` ``[B, T, H, r]`` and the Khatri-Rao identity."""
    u1, u2, u3 = _features(q, k1, k2, degree, scale)
    if causal:
        return _causal(u1, u2, u3, w1, w2, chunk_size)
    s1 = jnp.einsum("bthr,bthd->bhrd", u2, w1, precision=_HIGHEST)
    s2 = jnp.einsum("bthr,bthd->bhrd", u3, w2, precision=_HIGHEST)
    return jnp.einsum("bthr,bhrd->bthd", u1, s1 * s2, precision=_HIGHEST)


_IMPLEMENTATIONS = {"reference": _reference, "xla": _xla}


def tensor_attention_poly(q, k1, k2, v1, v2, *, degree: int, scale=None, causal: bool = True, chunk_size: int = 64,
                          impl: str = "auto"):
    """Degree-``degree`` low-rank approximation of :func:`jaxattn.ops.tensor_attention`.

    Args:
      q, k1, k2: ``[B, T, H, D]``; v1, v2: ``[B, T, H, Dv]``.
      degree: g >= 1, the Taylor degree (feature rank ``C(D + g, g)``).
      scale: default ``D ** -0.5``.
      causal: pairs ``j, k <= i`` only.
      chunk_size: tokens per chunk of the causal xla path.
      impl: ``"reference"`` (explicit weights, cubic in T), ``"xla"`` or ``"auto"`` (xla).

    Returns:
      ``[B, T, H, Dv]`` fp32.

    Example::

        q = k1 = k2 = v1 = v2 = jnp.ones((2, 16, 4, 8))  # [B, T, H, D]
        o = tensor_attention_poly(q, k1, k2, v1, v2, degree=2)  # [2, 16, 4, 8]
    """
    require_positive_int("tensor_attention_poly", "degree", degree)
    require_positive_int("tensor_attention_poly", "chunk_size", chunk_size)
    require_scale("tensor_attention_poly", scale)
    for name, a in (("q", q), ("k1", k1), ("k2", k2), ("v1", v1), ("v2", v2)):
        require_rank("tensor_attention_poly", name, a, "B, T, H, D")
    if k1.shape != q.shape or k2.shape != q.shape or v1.shape != v2.shape or v1.shape[:3] != q.shape[:3]:
        raise ValueError(f"tensor_attention_poly: shapes q {q.shape}, k1 {k1.shape}, k2 {k2.shape}, "
                         f"v1 {v1.shape}, v2 {v2.shape} do not fit [B, T, H, D] / [B, T, H, Dv]")
    require_nonempty("tensor_attention_poly", "q", q.shape[1])
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q, k1, k2 = (a.astype(jnp.float32) for a in (q, k1, k2))
    w1, w2 = (with_normalizer_column(v.astype(jnp.float32)) for v in (v1, v2))  # ones: the normaliser
    attend = resolve_impl("tensor_attention_poly", impl, _IMPLEMENTATIONS)
    return normalized(attend(q, k1, k2, w1, w2, degree, scale, bool(causal), chunk_size), eps=0.0)


def _causal(u1, u2, u3, w1, w2, chunk_size):
    """``U1_i . (S1_i .* S2_i)`` with ``S1_i = sum_{j <= i} U2_j^T W1_j`` (and ``S2`` likewise)."""
    batch, length, heads, rank = u1.shape
    pad = -length % chunk_size
    chunked = lambda a: jnp.moveaxis(  # noqa: E731
        jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(batch, -1, chunk_size, heads, a.shape[-1]), 1, 0
    )

    def chunk_step(carry, xs):
        s1, s2 = carry  # sums over the chunks before: [B, H, r, Dv + 1]
        c1, c2, c3, cw1, cw2 = xs  # [B, C, H, .]
        p1 = s1[:, None] + jnp.cumsum(jnp.einsum("bthr,bthd->bthrd", c2, cw1, precision=_HIGHEST), axis=1)
        p2 = s2[:, None] + jnp.cumsum(jnp.einsum("bthr,bthd->bthrd", c3, cw2, precision=_HIGHEST), axis=1)
        out = jnp.einsum("bthr,bthrd->bthd", c1, p1 * p2, precision=_HIGHEST)
        return (p1[:, -1], p2[:, -1]), out

    init = jnp.zeros((batch, heads, rank, w1.shape[-1]))
    _, out = jax.lax.scan(chunk_step, (init, init), tuple(chunked(a) for a in (u1, u2, u3, w1, w2)))
    return jnp.moveaxis(out, 0, 1).reshape(batch, -1, heads, w1.shape[-1])[:, :length]

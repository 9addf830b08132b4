"""What the benchmark measures: per op, its inputs, its function per implementation, and its
analytic FLOP and byte counts (the roofline's numerators).

Sizes come in a :class:`Shape`: batch B, heads H, head size D (K = V = D), length T, dtype.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from experiments import bench_attention_peers, bench_fla
from jaxattn.nn import S4, S4D, S5
from jaxattn.ops import (
    delta_rule, diagonal_scan, linear_attention, lmul_dot_general, softmax_attention, tensor_attention,
    tensor_attention_poly,
)
from jaxattn.ops.tensor_attention_poly import feature_rank

LINEAR_ATTENTION_CHUNK = 64


def delta_rule_chunk() -> int:
    """Delta steps per chunk: the kernels' tile, 64, on accelerators; 16 on CPU, where XLA runs the
    chunk's C x C products as small batched matmuls far below the matmul rate, so the C^2 terms cost
    more than the per-chunk overhead saves (forward, B=1, H=4, D=64, T=16384: 57 ms with C=16, 64 ms
    with 32, 83 ms with 64; linear attention is fastest at 64 there too)."""
    return 16 if jax.default_backend() == "cpu" else 64


@dataclasses.dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    head_dim: int
    length: int
    dtype: str

    @property
    def itemsize(self) -> int:
        return jnp.dtype(self.dtype).itemsize

    @property
    def tokens_by_width(self) -> int:
        """``B * T * H * D``: the elements of one ``[B, T, H, D]`` array."""
        return self.batch * self.length * self.heads * self.head_dim


class Peer(NamedTuple):
    """An implementation outside JAX (another framework's kernel), timed by its own harness:
    ``skip_reason(shape)`` ("" to run) and ``time(shape, repeats, backward) -> (forward seconds,
    forward + backward seconds or None)``."""

    skip_reason: Callable[[Shape], str]
    time: Callable[[Shape, int, bool], tuple]


@dataclasses.dataclass(frozen=True)
class Case:
    """One op: inputs, the function per impl, forward FLOPs (of a shape and impl) and the bytes a forward must move at
    least (inputs read once, outputs written once), and the bytes of its largest intermediate
    (quadratic XLA paths keep ``[B, H, T, T]`` scores; the memory budget skips what will not fit)."""

    make_inputs: Callable[[Shape], tuple]
    run: Callable[[str], Callable]
    forward_flops: Callable[[Shape, str], float]
    forward_bytes: Callable[[Shape], float]
    impls: tuple[str, ...]
    working_set_bytes: Callable[[Shape, str], float] = lambda shape, impl: 0.0
    forward_only_impls: tuple[str, ...] = ()
    peers: Mapping[str, Peer] = dataclasses.field(default_factory=dict)


def _qkv(shape: Shape):
    keys = jax.random.split(jax.random.key(0), 3)
    dims = (shape.batch, shape.length, shape.heads, shape.head_dim)
    return tuple(jax.random.normal(key, dims, shape.dtype) for key in keys)


def _raw_triton_linear_attention(q, k, v):
    """The hand-written Triton kernel (jax-triton, GPU only) on the same inputs; forward only."""
    from pallas_kernels.triton_raw.linear_attention import linear_attention_forward

    head_major = [jnp.swapaxes(a, 1, 2) for a in (q, k, v)]
    batch, heads, _, key_dim = head_major[0].shape
    state = jnp.zeros((batch, heads, key_dim, v.shape[-1]), jnp.float32)
    out, _ = linear_attention_forward(*head_major, None, state, scale=key_dim**-0.5, chunk_size=LINEAR_ATTENTION_CHUNK)
    return jnp.swapaxes(out, 1, 2).astype(v.dtype)


def _gated_qkv(shape: Shape):
    """q, k, v ``[B, T, H, D]`` and log gates ``log sigmoid(x + 2)`` ``[B, T, H]`` (decays near 0.9)."""
    q, k, v = _qkv(shape)
    return q, k, v, jax.nn.log_sigmoid(jax.random.normal(jax.random.key(4), q.shape[:3]) + 2.0)


def _linear_attention_case(gated: bool) -> Case:
    """Linear attention, plain or with a scalar log gate per head and token; fla's ``chunk_simple_gla`` (the
    same recurrence) as a peer on GPU; the raw Triton kernel (plain only, forward only)."""

    def run(impl):
        if impl == "triton":
            return _raw_triton_linear_attention
        return lambda q, k, v, g=None: linear_attention(q, k, v, g=g, chunk_size=LINEAR_ATTENTION_CHUNK, impl=impl)

    fla = Peer(lambda shape: bench_fla.skip_reason(shape.dtype),
               lambda shape, repeats, backward: bench_fla.time_linear_attention(shape, gated, repeats, backward))
    return Case(
        _gated_qkv if gated else _qkv, run, lambda shape, impl: _linear_attention_flops(shape),
        lambda shape: (4.0 * shape.tokens_by_width + gated * shape.batch * shape.length * shape.heads) * shape.itemsize,
        ("xla", "pallas", "reference", "fla") if gated else ("xla", "pallas", "triton", "reference", "fla"),
        forward_only_impls=("triton",), peers={"fla": fla},
    )


def _linear_attention_flops(shape: Shape) -> float:
    """Chunked: per token and head ``2C(K+V)`` (intra-chunk) + ``2KV`` (state update) + ``2KV`` (inter)."""
    d = shape.head_dim
    return shape.batch * shape.heads * shape.length * (4 * LINEAR_ATTENTION_CHUNK * d + 4 * d * d)


def _delta_rule_inputs(steps: int, gated: bool):
    """q ``[B, T, H, D]``; unit-norm k and v ``[B, T n, H, D]``, beta ``[B, T n, H]`` in (0.05, 0.95)
    (DeltaNet's ranges); with gates, log decays ``log sigmoid(x + 2)`` ``[B, T, H]``."""

    def make(shape: Shape):
        q, _, _ = _qkv(shape)
        k, v = _qkv(dataclasses.replace(shape, length=shape.length * steps))[1:]
        k = k / jnp.linalg.norm(k.astype(jnp.float32), axis=-1, keepdims=True).astype(k.dtype)
        beta = jax.random.uniform(jax.random.key(3), k.shape[:3], minval=0.05, maxval=0.95).astype(shape.dtype)
        if not gated:
            return q, k, v, beta
        return q, k, v, beta, jax.nn.log_sigmoid(jax.random.normal(jax.random.key(4), q.shape[:3]) + 2.0)

    return make


def _delta_rule_flops(shape: Shape, steps: int) -> float:
    """Chunked WY/UT form, per delta step and head (chunk C, K = V = D): ``2CK`` gram + ``C^2 / 3``
    inverse + ``2C(K+V)`` for ``u`` and ``w`` + ``2CK`` scores + ``2CV`` intra-chunk + ``6KV`` (``wS``,
    ``qS``, state update), as multiply-adds x 2; the same count for every impl (the useful work)."""
    c, d = delta_rule_chunk(), shape.head_dim
    return shape.batch * shape.heads * shape.length * steps * 2 * (5 * c * d + c * c / 3 + 3 * d * d)


def _delta_rule_case(steps: int, gated: bool) -> Case:
    """DeltaNet (``steps = 1``) or DeltaProduct, gated or not; fla's chunk kernel as a peer on GPU."""

    def run(impl):
        def fn(q, k, v, beta, g=None):
            return delta_rule(q, k, v, beta, g=g, householder_steps=steps, chunk_size=delta_rule_chunk(),
                              impl=impl)

        return fn

    def moved(shape):  # q, k, v (n steps each for k, v), o, beta, g
        steps_by_width = shape.tokens_by_width * steps
        return (2 * shape.tokens_by_width + 2 * steps_by_width) * shape.itemsize + (
            shape.batch * shape.length * shape.heads * (steps + gated) * shape.itemsize)

    fla = Peer(lambda shape: bench_fla.skip_reason(shape.dtype),
               lambda shape, repeats, backward: bench_fla.time_delta_rule(shape, steps, gated, repeats, backward))
    return Case(_delta_rule_inputs(steps, gated), run, lambda shape, impl: _delta_rule_flops(shape, steps), moved,
                ("xla", "pallas", "reference", "fla"), peers={"fla": fla})


def _softmax_flops(shape: Shape) -> float:
    """Causal: half of ``2 T^2 (K + V)`` per head."""
    return 2.0 * shape.batch * shape.heads * shape.length**2 * shape.head_dim


def _scan_inputs(shape: Shape):
    dims = (shape.batch, shape.length, shape.heads * shape.head_dim)
    a = jax.random.uniform(jax.random.key(0), dims, minval=0.5, maxval=0.99)
    return a.astype(shape.dtype), jax.random.normal(jax.random.key(1), dims).astype(shape.dtype)


def _softmax_scores_bytes(shape: Shape, impl: str) -> float:
    """Only the XLA and reference paths keep ``[B, H, T, T]`` fp32 scores; the flash kernels keep none."""
    return 4.0 * shape.batch * shape.heads * shape.length**2 if impl in ("xla", "reference") else 0.0


def _cudnn_attention(q, k, v):
    """cuDNN's fused attention (GPU, fp16/bf16), the vendor kernel flash attention is held to."""
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def _softmax_attention(impl: str):
    """Ours (``xla``, ``pallas``, ``reference``; ``pallas_mosaic`` / ``pallas_triton``: pallas with the GPU
    family that :func:`experiments.bench_attention_peers.gpu_kernel_family` sets), cuDNN, or a peer kernel."""
    if impl == "cudnn":
        return _cudnn_attention
    if impl in bench_attention_peers.IMPLS and impl not in bench_attention_peers.KERNEL_FAMILIES:
        return bench_attention_peers.run(impl)
    ours = "pallas" if impl in bench_attention_peers.KERNEL_FAMILIES else impl
    return lambda q, k, v: softmax_attention(q, k, v, impl=ours)


def _matmul_inputs(shape: Shape):
    """A Dense layer's product: ``[B T, H D] x [H D, H D]``."""
    width = shape.heads * shape.head_dim
    a = jax.random.normal(jax.random.key(0), (shape.batch * shape.length, width), shape.dtype)
    return a, jax.random.normal(jax.random.key(1), (width, width), shape.dtype) * width**-0.5


def _matmul(impl: str):
    """``native`` (the device's matmul), or L-Matmul: ``formula``, ``bitwise`` (XLA), ``pallas``."""
    if impl == "native":
        return lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32)
    options = dict(semantics="formula") if impl == "formula" else dict(impl="xla" if impl == "bitwise" else "pallas")
    return lambda a, b: lmul_dot_general(a, b, (((1,), (0,)), ((), ())), mantissa_bits=3,
                                         preferred_element_type=jnp.float32, **options)


def _matmul_flops(shape: Shape) -> float:
    width = shape.heads * shape.head_dim
    return 2.0 * shape.batch * shape.length * width * width


def _tensor_inputs(shape: Shape):
    """q, k1, k2, v1, v2 ``[B, T, H, D]``."""
    keys = jax.random.split(jax.random.key(0), 5)
    dims = (shape.batch, shape.length, shape.heads, shape.head_dim)
    return tuple(jax.random.normal(key, dims, shape.dtype) for key in keys)


def _tensor_flops(shape: Shape) -> float:
    """Non-causal exact: per head ``2 T^3 D`` (logits of every pair) + ``2 T^3 D`` (``P V2``)."""
    return 4.0 * shape.batch * shape.heads * shape.length**3 * shape.head_dim


def _tensor_cube_bytes(shape: Shape, impl: str) -> float:
    """The reference keeps the ``[B, H, T, T, T]`` fp32 logits."""
    return 4.0 * shape.batch * shape.heads * shape.length**3 if impl == "reference" else 0.0


def _poly_degree(impl: str) -> int:
    """``"degree2"`` -> 2."""
    return int(impl.removeprefix("degree"))


def _tensor_poly_flops(shape: Shape, impl: str) -> float:
    """Features of rank ``r = C(D + g, g)``, non-causal: per head ``2 T r (D + 1)`` for each of
    ``U2^T W1``, ``U3^T W2`` and ``U1 (S1 .* S2)``."""
    rank = feature_rank(shape.head_dim, _poly_degree(impl))
    return 6.0 * shape.batch * shape.heads * shape.length * rank * (shape.head_dim + 1)


SSM_STATE_SIZE = 64
_SSM_LAYERS = {
    "s4d_fft": lambda: S4D(state_size=SSM_STATE_SIZE, mode="convolution"),
    "s4d_scan": lambda: S4D(state_size=SSM_STATE_SIZE, mode="recurrence"),
    "s4_fft": lambda: S4(state_size=SSM_STATE_SIZE),
    "s5_scan": lambda: S5(state_size=SSM_STATE_SIZE),
}


def _ssm_inputs(shape: Shape):
    """``u [B, T, H D]`` and the parameters of every layer of :data:`_SSM_LAYERS` for that width."""
    u = jax.random.normal(jax.random.key(0), (shape.batch, shape.length, shape.heads * shape.head_dim), shape.dtype)
    variables = {name: make().init(jax.random.key(1), u[:, :8]) for name, make in _SSM_LAYERS.items()}
    return u, variables


def _ssm_layer(impl: str):
    layer = _SSM_LAYERS[impl]()
    return lambda u, variables: layer.apply(variables[impl], u)


def _ssm_flops(shape: Shape) -> float:
    """The recurrence's count, whatever the path: a complex multiply-add (8 real FLOPs) per
    stored mode (N/2), feature and token."""
    return 8.0 * shape.batch * shape.length * shape.heads * shape.head_dim * SSM_STATE_SIZE / 2


CASES = {
    "linear_attention": _linear_attention_case(gated=False),
    "gated_linear_attention": _linear_attention_case(gated=True),
    "delta_rule": _delta_rule_case(1, gated=False),
    "gated_delta_rule": _delta_rule_case(1, gated=True),
    "delta_product": _delta_rule_case(2, gated=False),
    "gated_delta_product": _delta_rule_case(2, gated=True),
    "softmax_attention": Case(
        _qkv,
        _softmax_attention,
        lambda shape, impl: _softmax_flops(shape),
        lambda shape: 4.0 * shape.tokens_by_width * shape.itemsize,
        ("xla", "pallas", "cudnn", "reference", *bench_attention_peers.IMPLS),
        working_set_bytes=_softmax_scores_bytes,
        forward_only_impls=("cudnn", *bench_attention_peers.FORWARD_ONLY),
    ),
    "lmul_matmul": Case(
        _matmul_inputs, _matmul, lambda shape, impl: _matmul_flops(shape),
        lambda shape: (2 * shape.tokens_by_width + (shape.heads * shape.head_dim) ** 2) * shape.itemsize,
        ("native", "formula", "bitwise", "pallas"),
    ),
    "tensor_attention": Case(
        _tensor_inputs,
        lambda impl: lambda *args: tensor_attention(*args, causal=False, impl=impl),
        lambda shape, impl: _tensor_flops(shape),
        lambda shape: 6.0 * shape.tokens_by_width * shape.itemsize,
        ("xla", "pallas", "reference"),
        working_set_bytes=_tensor_cube_bytes,
    ),
    "tensor_attention_poly": Case(
        _tensor_inputs,
        lambda impl: lambda *args: tensor_attention_poly(*args, degree=_poly_degree(impl), causal=False),
        _tensor_poly_flops,
        lambda shape: 6.0 * shape.tokens_by_width * shape.itemsize,
        ("degree1", "degree2", "degree3"),
    ),
    # SSM layers (features H D, state 64): the convolution path by FFT against the recurrence.
    "ssm_layer": Case(
        _ssm_inputs, _ssm_layer, lambda shape, impl: _ssm_flops(shape),
        lambda shape: 2.0 * shape.tokens_by_width * shape.itemsize,
        tuple(_SSM_LAYERS),
    ),
    "diagonal_scan": Case(
        _scan_inputs,
        lambda impl: lambda a, b: diagonal_scan(a, b, impl=impl)[0],
        lambda shape, impl: 2.0 * shape.tokens_by_width,
        lambda shape: 3.0 * shape.tokens_by_width * shape.itemsize,
        ("xla", "pallas", "reference"),
    ),
}

"""Tunable kernels: the block-size dataclasses' rules and defaults, a non-default block size of every
family through its op in the interpreter against the reference (forward and gradients, odd sizes),
the ``interpret=`` argument against the environment switch, and refusals on other impls. Lowering
with non-default sizes is in each kernel's file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import delta_rule, diagonal_scan, linear_attention, softmax_attention, tensor_attention
from jaxattn.ops.lmul_matmul import lmul_dot_general
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.diagonal_scan.block_sizes import ScanBlockSizes
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes
from pallas_kernels.lmul_matmul import LMulBlockSizes
from pallas_kernels.platform import INTERPRET_ENV
from pallas_kernels.tensor_attention.block_sizes import TensorBlockSizes

# (dataclass, platform, fields, error, message): one per rule.
INVALID = [
    (FlashBlockSizes, "cuda", {}, ValueError, "`platform` must be one of"),
    (FlashBlockSizes, "triton", dict(block_q=0), ValueError, "`block_q` must be a positive int"),
    (FlashBlockSizes, "triton", dict(block_q=16.0), TypeError, "`block_q` must be an int"),
    (FlashBlockSizes, "triton", dict(block_q=48), ValueError, "`block_q` must be a power of two for the Triton"),
    (FlashBlockSizes, "triton", dict(block_k=8), ValueError, "`block_k` must be >= 16 for the Triton"),
    (FlashBlockSizes, "tpu", dict(block_q=12), ValueError, r"`block_q` must be a multiple of 8 for the TPU \(Mosaic\)"),
    (FlashBlockSizes, "tpu", dict(block_k=64), ValueError, "`block_k` must be a multiple of 128 for the TPU"),
    (FlashBlockSizes, "tpu", dict(num_warps=4), ValueError, r"`num_warps` is not a setting of the TPU \(Mosaic\)"),
    (TensorBlockSizes, "triton", dict(block_k2=8), ValueError, "`block_k2` must be >= 16"),
    (TensorBlockSizes, "tpu", dict(block_k1=4), ValueError, "`block_k1` must be a multiple of 8"),
    (ChunkedBlockSizes, "triton", dict(num_warps=3), ValueError, "`num_warps` must be a power of two"),
    (ChunkedBlockSizes, "tpu", dict(num_stages=2), ValueError, "`num_stages` is not a setting of the TPU"),
    (ChunkedBlockSizes, "triton", dict(block_v=48), ValueError, "`block_v` must be a power of two for the Triton"),
    (ChunkedBlockSizes, "triton", dict(block_v=8), ValueError, "`block_v` must be >= 16 for the Triton"),
    (ChunkedBlockSizes, "tpu", dict(block_v=64), ValueError, "`block_v` must be a multiple of 128 for the TPU"),
    (ScanBlockSizes, "tpu", dict(feature_tile=64), ValueError, "`feature_tile` must be a multiple of 128"),
    (ScanBlockSizes, "triton", dict(time_tile=64), ValueError, "`time_tile` is not a setting of the Triton"),
    (LMulBlockSizes, "tpu", dict(block_n=64), ValueError, "`block_n` must be a multiple of 128"),
    (LMulBlockSizes, "triton", dict(block_k=3), ValueError, "`block_k` must be a power of two"),
]


@pytest.mark.parametrize("cls, platform, fields, error, message", INVALID)
def test_each_rule_is_enforced_naming_the_field(cls, platform, fields, error, message):
    with pytest.raises(error, match=f"{cls.__name__}: {message}"):
        cls(platform, **fields)


# (dataclass, platform, dtype, head_dim, expected defaults): the tile sizes the kernels always used.
DEFAULTS = [
    (FlashBlockSizes, "tpu", jnp.float32, 128, dict(block_q=128, block_k=128)),
    (FlashBlockSizes, "triton", jnp.bfloat16, 128, dict(block_q=64, block_k=64, num_warps=4, num_stages=2)),
    (FlashBlockSizes, "triton", jnp.float32, 64, dict(block_q=64, block_k=64, num_warps=4, num_stages=2)),
    (FlashBlockSizes, "triton", jnp.float32, 72, dict(block_q=32, block_k=32, num_warps=4, num_stages=1)),
    (TensorBlockSizes, "tpu", jnp.float32, 64, dict(block_q=32, block_k1=16, block_k2=128)),
    (TensorBlockSizes, "triton", jnp.float32, 64, dict(block_q=16, block_k1=8, block_k2=32, num_warps=8, num_stages=2)),
    (ChunkedBlockSizes, "triton", jnp.float32, 128, dict(num_warps=4, num_stages=1)),
    (ChunkedBlockSizes, "triton", jnp.bfloat16, 128, dict(num_warps=4, num_stages=2)),
    (ChunkedBlockSizes, "tpu", jnp.bfloat16, 128, dict()),  # block_v None: whole heads, no value split
    (ScanBlockSizes, "tpu", jnp.float32, 0, dict(feature_tile=128, time_tile=256)),
    (ScanBlockSizes, "triton", jnp.float32, 0, dict(feature_tile=128, unroll=16, num_warps=4, num_stages=1)),
    (LMulBlockSizes, "tpu", jnp.bfloat16, 0, dict(block_m=128, block_n=128, block_k=8)),
    (LMulBlockSizes, "triton", jnp.bfloat16, 0, dict(block_m=32, block_n=32, block_k=4, num_warps=4, num_stages=2)),
]


@pytest.mark.parametrize("cls, platform, dtype, head_dim, expected", DEFAULTS)
def test_defaults_per_platform_and_dtype(cls, platform, dtype, head_dim, expected):
    assert cls.default(platform, dtype, head_dim) == cls(platform, **expected)


def test_resolve_fills_unset_fields_and_picks_the_platform():
    tuned = (FlashBlockSizes("tpu", block_q=256), FlashBlockSizes("triton", num_warps=8))
    assert FlashBlockSizes.resolve(tuned, "tpu") == FlashBlockSizes("tpu", block_q=256, block_k=128)
    assert FlashBlockSizes.resolve(tuned[1], "tpu") == FlashBlockSizes.default("tpu")  # the other platform's
    assert FlashBlockSizes.resolve(tuned, "triton", jnp.float32, 72) == FlashBlockSizes(
        "triton", block_q=32, block_k=32, num_warps=8, num_stages=1)
    with pytest.raises(ValueError, match="one FlashBlockSizes per platform"):
        FlashBlockSizes.resolve((tuned[0], tuned[0]), "tpu")
    with pytest.raises(TypeError, match="`block_sizes` must be a FlashBlockSizes"):
        FlashBlockSizes.resolve(ScanBlockSizes("tpu"), "tpu")


def relative_error(got, want):
    return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


def _inputs(shapes, seed=0):
    return [jax.random.normal(key, shape) for key, shape in zip(jax.random.split(jax.random.key(seed), len(shapes)),
                                                                 shapes)]


def _unit(k):
    return k / jnp.linalg.norm(k, axis=-1, keepdims=True)


# name: (op(impl, *args, **kernel options), argument shapes, block sizes, interpret): one family each,
# odd sizes, blocks that differ from the defaults and leave partial blocks.
FAMILIES = {
    "flash": (lambda impl, q, k, v, **o: softmax_attention(q, k, v, scale=0.3, impl=impl, **o),
              [(1, 37, 2, 12)] * 2 + [(1, 37, 2, 10)], FlashBlockSizes("triton", block_q=16, block_k=32), True),
    "tensor": (lambda impl, *a, **o: tensor_attention(*a, scale=0.3, window=(5, 9), impl=impl, **o),
               [(1, 21, 1, 8)] * 5, TensorBlockSizes("tpu", block_q=8, block_k1=8, block_k2=24), "tpu"),
    "chunked-linear": (lambda impl, q, k, v, g, **o: linear_attention(q, k, v, g=-jax.nn.softplus(g), chunk_size=16,
                                                                      impl=impl, **o),
                       [(1, 37, 2, 12)] * 3 + [(1, 37, 2)], ChunkedBlockSizes("triton", num_warps=8, num_stages=3),
                       True),
    "chunked-linear-value-split": (lambda impl, q, k, v, g, **o: linear_attention(q, k, v, g=-jax.nn.softplus(g),
                                                                                  chunk_size=16, impl=impl, **o),
                                   [(1, 37, 2, 12)] * 2 + [(1, 37, 2, 40)] + [(1, 37, 2)],
                                   ChunkedBlockSizes("triton", block_v=16), True),
    "chunked-delta": (lambda impl, q, k, v, b, **o: delta_rule(q, _unit(k), v, jax.nn.sigmoid(b), chunk_size=16,
                                                               impl=impl, **o),
                      [(1, 21, 2, 12)] * 3 + [(1, 21, 2)], ChunkedBlockSizes("triton", num_warps=2), True),
    "scan": (lambda impl, a, b, **o: diagonal_scan(jax.nn.sigmoid(a), b, impl=impl, **o)[0], [(2, 37, 130)] * 2,
             ScanBlockSizes("tpu", feature_tile=256, time_tile=16), "tpu"),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_non_default_block_sizes_match_reference(name):
    fn, shapes, block_sizes, interpret = FAMILIES[name]
    args = _inputs(shapes)
    options = dict(block_sizes=block_sizes, interpret=interpret)
    want = fn("reference", *args)
    assert relative_error(fn("pallas", *args, **options), want) < 1e-5
    weights = jnp.cos(jnp.arange(want.size).reshape(want.shape))

    def grads(impl, **o):
        return jax.grad(lambda *a: jnp.sum(fn(impl, *a, **o) * weights), range(len(args)))(*args)

    for got, expected in zip(grads("pallas", **options), grads("reference")):
        assert relative_error(got, expected) < 1e-4


def test_lmul_matmul_non_default_block_sizes_match_xla():
    """The integer products are exact: only the order of the fp32 sums may differ."""
    a, b = _inputs([(2, 150, 19), (2, 19, 140)])
    dims = (((2,), (1,)), ((0,), (0,)))
    want = lmul_dot_general(a, b, dims, mantissa_bits=3, impl="xla")
    for block_sizes, interpret in [(LMulBlockSizes("triton", block_m=16, block_n=64, block_k=2), True),
                                   (LMulBlockSizes("tpu", block_m=64, block_n=256, block_k=3), "tpu")]:
        got = lmul_dot_general(a, b, dims, mantissa_bits=3, impl="pallas", block_sizes=block_sizes, interpret=interpret)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpret, env", [(True, "1"), ("tpu", "tpu")])
def test_interpret_argument_equals_the_environment_switch(monkeypatch, interpret, env):
    """The same kernel in the interpreter, and nothing else: one jaxpr."""
    q, k, v = _inputs([(1, 20, 1, 8)] * 3)
    trace = lambda **o: str(jax.make_jaxpr(lambda q: softmax_attention(q, k, v, impl="pallas", **o))(q))  # noqa: E731
    by_argument = trace(interpret=interpret)
    monkeypatch.setenv(INTERPRET_ENV, env)
    assert trace() == by_argument
    assert ("dimension_semantics" in by_argument) == (interpret == "tpu")  # Mosaic's compiler params
    monkeypatch.setenv(INTERPRET_ENV, "tpu" if env == "1" else "1")  # an explicit argument wins
    assert trace(interpret=interpret) == by_argument


def test_interpret_false_leaves_cpu_without_a_kernel_and_bad_values_are_refused(monkeypatch):
    q, k, v = _inputs([(1, 20, 1, 8)] * 3)
    monkeypatch.setenv(INTERPRET_ENV, "1")  # ignored: the argument says never
    f = jax.jit(lambda q: softmax_attention(q, k, v, impl="pallas", interpret=False))
    with pytest.raises(NotImplementedError, match="platform_index"):
        f.trace(q).lower(lowering_platforms=("cpu",))
    assert "tpu_custom_call" in f.trace(q).lower(lowering_platforms=("tpu",)).as_text()
    with pytest.raises(ValueError, match="`interpret` must be None, True, False, 'gpu', 'tpu' or 'mosaic_gpu', got 'cpu'"):
        softmax_attention(q, k, v, impl="pallas", interpret="cpu")


def test_kernel_options_are_refused_off_the_kernels():
    q, k, v = _inputs([(1, 20, 1, 8)] * 3)
    with pytest.raises(ValueError, match="softmax_attention: `block_sizes`: for impl='pallas' only .* impl='xla'$"):
        softmax_attention(q, k, v, impl="xla", block_sizes=FlashBlockSizes("triton"))
    with pytest.raises(ValueError, match=r"linear_attention: `interpret`: .* \(impl='auto' resolved to 'xla'\)"):
        linear_attention(q, k, v, interpret=True)  # impl="auto" on CPU
    with pytest.raises(ValueError, match="diagonal_scan: `block_sizes` and `interpret`: for impl='pallas' only"):
        diagonal_scan(v, v, impl="reference", block_sizes=ScanBlockSizes("tpu"), interpret="tpu")
    with pytest.raises(TypeError, match="`block_sizes` must be a FlashBlockSizes"):
        softmax_attention(q, k, v, impl="pallas", block_sizes=ChunkedBlockSizes("triton"), interpret=True)


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
def test_lmul_matmul_with_non_default_block_sizes_lowers_for_accelerators(platform, marker, verified_triton_modules):
    a, b = _inputs([(2, 256, 64), (2, 64, 256)])
    sizes = (LMulBlockSizes("tpu", block_m=64, block_n=256, block_k=16),
             LMulBlockSizes("triton", block_m=16, block_k=8))
    dims = (((2,), (1,)), ((0,), (0,)))
    f = jax.jit(lambda a, b: lmul_dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), dims, mantissa_bits=3,
                                              impl="pallas", block_sizes=sizes))
    assert marker in f.trace(a, b).lower(lowering_platforms=(platform,)).as_text()

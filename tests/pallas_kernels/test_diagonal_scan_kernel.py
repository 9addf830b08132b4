"""Pallas diagonal scan: both kernels in the interpreter (long and odd T, tiles of features, bf16)
against the NumPy loop, and lowering for TPU and CUDA, forward and backward."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import diagonal_scan
from pallas_kernels.diagonal_scan.block_sizes import ScanBlockSizes

from tests.ops.test_diagonal_scan import numpy_scan, random_inputs


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(1, 300, 130), (2, 7, 3, 5)])  # several time and feature tiles; tiny
def test_matches_numpy_loop(kernel, complex_, reverse, shape):
    a, b, h0 = random_inputs(jax.random.key(len(shape)), shape, complex_)
    h, h_last = diagonal_scan(a, b, h0=h0, reverse=reverse, impl="pallas")
    expected, expected_last = numpy_scan(np.asarray(a), np.asarray(b), np.asarray(h0), reverse)
    np.testing.assert_allclose(np.asarray(h), expected if complex_ else expected.real, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(h_last), expected_last if complex_ else expected_last.real, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_reference_over_tiles(kernel, reverse):
    a, b, h0 = random_inputs(jax.random.key(8), (1, 270, 3), True)
    weights = jax.random.normal(jax.random.key(9), b.shape)

    def loss(impl, a, b, h0):
        h, h_last = diagonal_scan(a, b, h0=h0, reverse=reverse, impl=impl)
        return jnp.sum(jnp.real(h) * weights) + jnp.sum(jnp.abs(h_last) ** 2)

    want = jax.grad(lambda *args: loss("reference", *args), argnums=(0, 1, 2))(a, b, h0)
    got = jax.grad(lambda *args: loss("pallas", *args), argnums=(0, 1, 2))(a, b, h0)
    for g_got, g_want in zip(got, want):
        np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-4, atol=1e-4)


def test_bfloat16_keeps_its_dtype_and_computes_in_fp32(kernel):
    a, b, h0 = random_inputs(jax.random.key(2), (2, 40, 6), False)
    a, b, h0 = (x.astype(jnp.bfloat16) for x in (a, b, h0))
    h, _ = diagonal_scan(a, b, h0=h0, impl="pallas")
    expected, _ = numpy_scan(*(np.asarray(x, np.float32) for x in (a, b, h0)), False)
    assert h.dtype == jnp.bfloat16
    # Exact fp32 arithmetic on bf16 inputs; only the stored output is rounded (2^-8 relative).
    np.testing.assert_allclose(np.asarray(h, np.float32), expected.real, rtol=8e-3, atol=8e-3)


# Tiles that leave several TPU time tiles and a remainder of Triton's unrolled loop (T = 2 * 16 + 5).
HALF_SIZES = (ScanBlockSizes("tpu", time_tile=16), ScanBlockSizes("triton", unroll=16))
# Unit roundoff (half an ulp, relative) of the stored dtype.
UNIT_ROUNDOFF = {jnp.bfloat16: 2.0 ** -8, jnp.float16: 2.0 ** -11}


def _half_inputs(dtype, shape=(2, 37, 6)):
    a, b, h0 = random_inputs(jax.random.key(5), shape, False)
    cotangent = jax.random.normal(jax.random.key(6), shape).astype(dtype)
    return (*(x.astype(dtype) for x in (a, b, h0)), cotangent)


@pytest.mark.parametrize("dtype, reverse", [(jnp.bfloat16, False), (jnp.bfloat16, True), (jnp.float16, False)])
def test_half_precision_is_the_fp32_scan_of_the_same_inputs_rounded_once(kernel, dtype, reverse):
    """The kernels read half-precision blocks and carry fp32 states: the states and the gradients
    equal the fp32 reference on the same (exactly widened) inputs up to the rounding of what is
    stored: one rounding (the unit roundoff u) of h and db and, for da = g h_{t-1} and dh0 = a_0 g_0,
    of both factors and the product (3u)."""
    a, b, h0, cotangent = _half_inputs(dtype)
    widened = lambda xs: [x.astype(jnp.float32) for x in xs]  # noqa: E731

    def run(impl, a, b, h0, d_h, **options):
        scan = lambda a, b, h0: diagonal_scan(a, b, h0=h0, reverse=reverse, impl=impl, **options)  # noqa: E731
        (h, h_last), vjp = jax.vjp(scan, a, b, h0)
        return (h, h_last), vjp((d_h, jnp.zeros_like(h_last)))

    (h, h_last), grads = run("pallas", a, b, h0, cotangent, block_sizes=HALF_SIZES)
    (want, want_last), want_grads = run("reference", *widened((a, b, h0, cotangent)))
    assert h.dtype == h_last.dtype == dtype and all(g.dtype == dtype for g in grads)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    unit = UNIT_ROUNDOFF[dtype]
    np.testing.assert_allclose(f32(h), want, rtol=unit, atol=1e-5)
    np.testing.assert_allclose(f32(h_last), want_last, rtol=unit, atol=1e-5)
    for got, expected, rtol in zip(grads, want_grads, (3 * unit, unit, 3 * unit)):
        np.testing.assert_allclose(f32(got), expected, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("platform, marker", [("cuda", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
def test_bfloat16_reaches_the_kernel_without_a_conversion_pass(platform, marker, verified_triton_modules):
    """In the program lowered for an accelerator, forward and backward, no fp32 array of the sequence's size
    exists: the bf16 blocks are read and written by the kernels themselves (an fp32 copy of ``a``,
    ``b`` or ``h`` would be two extra passes over memory)."""
    a, b, h0, cotangent = _half_inputs(jnp.bfloat16, shape=(2, 301, 256))

    def forward_and_backward(a, b, h0, d_h):
        (h, h_last), vjp = jax.vjp(lambda a, b, h0: diagonal_scan(a, b, h0=h0, impl="pallas"), a, b, h0)
        return h, h_last, vjp((d_h, jnp.zeros_like(h_last)))

    text = jax.jit(forward_and_backward).trace(a, b, h0, cotangent).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == 2
    assert re.search(r"tensor<2x\d+x256xbf16>", text)  # the sequence (T padded to the TPU time tile) in bf16
    assert not re.search(r"tensor<2x\d{2,}x256xf32>", text), "an fp32 copy of a [B, T, F] array surrounds the kernel"


def test_float64_is_refused_by_pallas_and_auto_uses_xla():
    with jax.enable_x64(True):
        a, b = jnp.full((1, 4, 2), 0.5, jnp.float64), jnp.ones((1, 4, 2), jnp.float64)
        with pytest.raises(ValueError, match="impl='pallas' does not support dtype float64"):
            diagonal_scan(a, b, impl="pallas")
        np.testing.assert_array_equal(diagonal_scan(a, b, impl="auto")[0], diagonal_scan(a, b, impl="xla")[0])


@pytest.mark.parametrize("platform, marker", [("tpu", "tpu_custom_call"), ("cuda", "__gpu$xla.gpu.triton")])
@pytest.mark.parametrize("complex_, block_sizes", [
    (False, None), (True, None),
    (False, (ScanBlockSizes("tpu", feature_tile=256, time_tile=64),
             ScanBlockSizes("triton", feature_tile=64, unroll=4))),
])
def test_forward_and_backward_lower_for_accelerators(platform, marker, complex_, block_sizes, verified_triton_modules):
    a, b, h0 = random_inputs(jax.random.key(1), (2, 600, 200), complex_)

    def loss(a, b, h0):
        h, h_last = diagonal_scan(a, b, h0=h0, impl="pallas", block_sizes=block_sizes)
        return jnp.sum(jnp.abs(h)) + jnp.sum(jnp.abs(h_last))

    lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(a, b, h0).lower(lowering_platforms=(platform,))
    assert lowered.as_text().count(marker) == 2  # the forward scan and the reverse scan of the backward


@pytest.mark.parametrize("reverse", [False, True])
def test_triton_kernel_unrolled_loop_matches_one_row_loop(reverse):
    """Several rows per loop iteration, with a remainder (T = 4 * 9 + 3), in the interpreter."""
    from pallas_kernels.diagonal_scan import triton
    from pallas_kernels.diagonal_scan.block_sizes import ScanBlockSizes

    keys = jax.random.split(jax.random.key(3), 3)
    a = jax.random.uniform(keys[0], (2, 39, 256), minval=-1.0, maxval=1.0)
    b, h0 = jax.random.normal(keys[1], (2, 39, 256)), jax.random.normal(keys[2], (2, 1, 256))
    sizes = lambda unroll: ScanBlockSizes.resolve(ScanBlockSizes("triton", unroll=unroll), "triton")  # noqa: E731
    run = lambda unroll: triton.scan((a,), (b,), (h0,), reverse=reverse, interpret=True,  # noqa: E731
                                     block_sizes=sizes(unroll))
    (want,), (want_last,) = run(1)
    (got,), (got_last,) = run(4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_last, want_last, rtol=1e-6, atol=1e-6)

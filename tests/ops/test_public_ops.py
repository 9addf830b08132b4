"""The one ops surface: every public op is importable from ``jaxattn.ops``, and every op with an
``impl`` accepts ``impl="reference"`` and agrees with its other implementations (small, odd shapes)."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxattn.ops
from numerics import relative_error

_KEY = iter(jax.random.split(jax.random.key(0), 64))


def _normal(*shape, dtype=jnp.float32):
    return jax.random.normal(next(_KEY), shape, dtype)


B, T, H, D = 2, 7, 2, 4
Q, K, V = _normal(B, T, H, D), _normal(B, T, H, D) / 2, _normal(B, T, H, 3)
GATES = -jax.nn.softplus(_normal(B, T, H))
SEGMENTS = jnp.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
CONV_KERNEL, FFT_KERNELS = _normal(3, 3), (_normal(3, T), _normal(3, T))  # [W, C], [H, L] each
MODES = -0.5 + 1j * jnp.arange(1.0, 4.0)[None].repeat(3, 0).astype(jnp.complex64)  # [H=3, P=3]
STEPS = jnp.array([0.1, 0.03, 0.3])  # [H]
A_BAR = jax.vmap(jaxattn.ops.s4_discrete_system)(MODES, MODES / 3, MODES / 3, MODES.conj(), STEPS)[0]  # [H, N, N]


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _real(a):
    """A complex array as its real and imaginary parts (the comparisons are of real numbers)."""
    return jnp.stack([a.real, a.imag]) if jnp.iscomplexobj(a) else a


def _flat(*arrays):
    """Several outputs, real and imaginary parts apart, as one real array that one comparison covers."""
    return jnp.concatenate([_real(a).ravel() for a in arrays])


def _distillation(impl, q, k, phi_q, phi_k, causal=True):
    return jaxattn.ops.attention_distillation_loss(q, k, jax.nn.elu(phi_q) + 1, jax.nn.elu(phi_k) + 1,
                                                   causal=causal, impl=impl)


def _s4_system(impl, lam, p, b, step):
    return _flat(*jaxattn.ops.s4_discrete_system(lam, p, p, b, step, impl=impl))


# op -> (call(impl), the impls besides "reference" to compare, relative tolerance). Tolerances: every
# path accumulates in fp32; the largest, 1e-4, covers the chunked and FFT paths' reordered sums. L-Mul
# and the mantissa rounding are bit-exact: tolerance 0 asks for every bit equal.
CASES = {
    "apply_rotary": (lambda impl: jaxattn.ops.apply_rotary(Q, jnp.arange(T), impl=impl), ("xla",), 1e-6),
    "causal_conv1d": (lambda impl: jaxattn.ops.causal_conv1d(V[:, :, 0], CONV_KERNEL, segment_ids=SEGMENTS,
                                                             impl=impl)[0], ("xla",), 1e-6),
    "delta_rule": (lambda impl: jaxattn.ops.delta_rule(Q, _unit(K), V, jax.nn.sigmoid(GATES), g=GATES, impl=impl,
                                                       chunk_size=16 if impl == "pallas" else 4), ("xla", "pallas"), 1e-4),
    "attention_distillation_loss": (lambda impl: _distillation(impl, Q, K, Q[..., :3], K[..., :3]), ("xla",), 1e-5),
    "bilinear_transform": (lambda impl: _flat(*jaxattn.ops.bilinear_transform(MODES, STEPS[:, None], impl=impl)),
                           ("xla",), 1e-5),
    "diagonal_scan": (lambda impl: jaxattn.ops.diagonal_scan(jnp.exp(GATES), K[..., 0], impl=impl)[0],
                      ("xla", "pallas"), 1e-5),
    "fft_convolution": (lambda impl: jaxattn.ops.fft_convolution(V[:, :, 0], *FFT_KERNELS, impl=impl),
                        ("xla",), 1e-5),
    "linear_attention": (lambda impl: jaxattn.ops.linear_attention(Q, K, V, g=GATES, impl=impl,
                                                                   chunk_size=16 if impl == "pallas" else 4),
                         ("xla", "pallas"), 1e-4),
    "lmul": (lambda impl: jaxattn.ops.lmul(Q, K, mantissa_bits=3, impl=impl), ("xla",), 0),
    "lmul_dot_general": (lambda impl: jaxattn.ops.lmul_dot_general(Q[0, 0], K[0, 0].T, (((1,), (0,)), ((), ())),
                                                                   mantissa_bits=3, impl=impl), ("xla", "pallas"), 1e-6),
    "padded_fft_convolution": (lambda impl: _flat(*jaxattn.ops.padded_fft_convolution(
        V[:, :, 0], list(FFT_KERNELS), segment_ids=SEGMENTS, impl=impl)), ("xla",), 1e-5),
    "round_mantissa": (lambda impl: jaxattn.ops.round_mantissa(Q, 3, impl=impl), ("xla",), 0),
    "s4_c_tilde": (lambda impl: _flat(jaxattn.ops.s4_c_tilde(MODES, MODES / 3, MODES / 3, MODES.conj(), MODES, STEPS,
                                                             9, impl=impl)), ("xla",), 1e-5),
    "s4_c_from_c_tilde": (lambda impl: _flat(jaxattn.ops.s4_c_from_c_tilde(A_BAR, MODES, 9, impl=impl)),
                          ("xla",), 1e-5),
    "s4_discrete_system": (lambda impl: _s4_system(impl, MODES[0], MODES[0] / 3, MODES[0].conj(), 0.1), ("xla",), 1e-5),
    "s4_kernel": (lambda impl: jaxattn.ops.s4_kernel(MODES, MODES / 3, MODES / 3, MODES.conj(), MODES, jnp.full(3, 0.1),
                                                     9, impl=impl), ("xla",), 1e-4),
    "s4d_kernel": (lambda impl: jaxattn.ops.s4d_kernel(MODES, MODES.conj(), MODES, jnp.full(3, 0.1), 9, impl=impl),
                   ("xla",), 1e-5),
    "softmax_attention": (lambda impl: jaxattn.ops.softmax_attention(Q, K, Q + K, segment_ids=SEGMENTS, impl=impl),
                          ("xla", "pallas"), 1e-5),
    "tensor_attention": (lambda impl: jaxattn.ops.tensor_attention(Q, K, K / 2, V, V / 2, impl=impl),
                         ("xla", "pallas"), 1e-5),
    "tensor_attention_poly": (lambda impl: jaxattn.ops.tensor_attention_poly(Q, K, K, V, V + 3, degree=2,
                                                                             chunk_size=4, impl=impl), ("xla",), 1e-4),
    "zero_order_hold": (lambda impl: _flat(*jaxattn.ops.zero_order_hold(MODES, STEPS[:, None], impl=impl)),
                        ("xla",), 1e-5),
}

# The ops whose reference stands in for a differentiable computation: op -> (f(impl, *args), args,
# relative tolerance of the gradient of sum |f|^2 with respect to every arg). Odd sizes throughout.
GRADIENT_CASES = {
    "apply_rotary": (lambda impl, x: jaxattn.ops.apply_rotary(x, jnp.arange(T), impl=impl), (Q,), 1e-6),
    "causal_conv1d": (lambda impl, x, w: jaxattn.ops.causal_conv1d(x, w, segment_ids=SEGMENTS, impl=impl)[0],
                      (V[:, :, 0], CONV_KERNEL), 1e-6),
    "attention_distillation_loss": (_distillation, (Q, K, Q[..., :3], K[..., :3]), 1e-5),
    "attention_distillation_loss (bidirectional)": (functools.partial(_distillation, causal=False),
                                                    (Q, K, Q[..., :3], K[..., :3]), 1e-5),
    "bilinear_transform": (lambda impl, lam, step: _flat(*jaxattn.ops.bilinear_transform(lam, step, impl=impl)),
                           (MODES, STEPS[:, None]), 1e-5),
    "fft_convolution": (lambda impl, u, k, k_rev: jaxattn.ops.fft_convolution(u, k, k_rev, impl=impl),
                        (V[:, :, 0], *FFT_KERNELS), 1e-5),
    "lmul": (lambda impl, x, y: jaxattn.ops.lmul(x, y, mantissa_bits=3, backward="lmul", impl=impl), (Q, K), 1e-6),
    "padded_fft_convolution": (lambda impl, u, k, k_rev: _flat(*jaxattn.ops.padded_fft_convolution(
        u, [k, k_rev], segment_ids=SEGMENTS, impl=impl)), (V[:, :, 0], *FFT_KERNELS), 1e-5),
    "s4_c_tilde": (lambda impl, lam, p, b, c, step: jaxattn.ops.s4_c_tilde(lam, p, p, b, c, step, 9, impl=impl),
                   (MODES, MODES / 3, MODES.conj(), MODES, STEPS), 1e-5),
    "s4_c_from_c_tilde": (lambda impl, a_bar, c: _flat(jaxattn.ops.s4_c_from_c_tilde(a_bar, c, 9, impl=impl)),
                          (A_BAR, MODES), 1e-5),
    "s4_discrete_system": (_s4_system, (MODES[0], MODES[0] / 3, MODES[0].conj(), jnp.array(0.1)), 1e-5),
    "s4_kernel": (lambda impl, lam, p, b, c, step: jaxattn.ops.s4_kernel(lam, p, p, b, c, step, 9, impl=impl),
                  (MODES, MODES / 3, MODES.conj(), MODES, jnp.full(3, 0.1)), 1e-4),
    "s4d_kernel": (lambda impl, lam, b, c, step: jaxattn.ops.s4d_kernel(lam, b, c, step, 9, impl=impl),
                   (MODES, MODES.conj(), MODES, jnp.full(3, 0.1)), 1e-5),
    "tensor_attention_poly": (lambda impl, q, k1, k2, v1, v2: jaxattn.ops.tensor_attention_poly(
        q, k1, k2, v1, v2, degree=2, chunk_size=4, impl=impl), (Q, K, K, V, V + 3), 1e-4),
    "zero_order_hold": (lambda impl, lam, step: _flat(*jaxattn.ops.zero_order_hold(lam, step, impl=impl)),
                        (MODES, STEPS[:, None]), 1e-5),
}


def _takes_impl(name: str) -> bool:
    member = getattr(jaxattn.ops, name)
    return callable(member) and "impl" in inspect.signature(member).parameters


def test_every_public_name_imports_from_the_package_and_all_is_sorted():
    namespace = {}
    exec(f"from jaxattn.ops import {', '.join(jaxattn.ops.__all__)}", namespace)  # noqa: S102
    assert all(namespace[name] is getattr(jaxattn.ops, name) for name in jaxattn.ops.__all__)
    assert jaxattn.ops.__all__ == sorted(jaxattn.ops.__all__)


def test_every_op_with_an_impl_is_in_the_agreement_cases():
    assert {name for name in jaxattn.ops.__all__ if _takes_impl(name)} == set(CASES)


def test_every_public_function_takes_an_impl_and_feature_maps_is_the_one_namespace():
    functions = {name for name in jaxattn.ops.__all__ if inspect.isfunction(getattr(jaxattn.ops, name))}
    assert set(jaxattn.ops.__all__) - functions == {"feature_maps"}
    assert inspect.ismodule(jaxattn.ops.feature_maps)
    assert {name for name in functions if not _takes_impl(name)} == set()
    assert all(inspect.signature(getattr(jaxattn.ops, name)).parameters["impl"].default == "auto" for name in functions)


@pytest.mark.parametrize("op, impl", [(op, impl) for op, (_, impls, _) in CASES.items() for impl in impls])
def test_each_impl_agrees_with_the_reference(op, impl):
    call, _, rtol = CASES[op]
    want = call("reference")
    got = call(impl)
    assert got.shape == want.shape and got.dtype == want.dtype
    if rtol == 0:
        np.testing.assert_array_equal(got, want)
    else:
        assert relative_error(got, want) < rtol


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_reference_gradients_agree_with_xla(case):
    function, args, rtol = GRADIENT_CASES[case]

    def gradients(impl):
        loss = lambda *a: jnp.sum(jnp.abs(function(impl, *a)) ** 2)  # noqa: E731
        return jax.grad(loss, argnums=tuple(range(len(args))))(*args)

    want, got = gradients("reference"), gradients("xla")
    for arg, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        g, w = _real(g), _real(w)
        assert np.all(np.isfinite(w)) and relative_error(g, w) < rtol, (case, arg, relative_error(g, w))


@pytest.mark.parametrize("op", CASES)
def test_unknown_impl_is_refused_naming_the_op(op):
    call, _, _ = CASES[op]
    with pytest.raises(ValueError, match=rf"{op}: impl='fastest' is not one of 'auto', 'reference'"):
        call("fastest")

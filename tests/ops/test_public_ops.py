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


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# op -> (call(impl), the impls besides "reference" to compare, relative tolerance). Tolerances: every
# path accumulates in fp32; the largest, 1e-4, covers the chunked and FFT paths' reordered sums.
CASES = {
    "apply_rotary": (lambda impl: jaxattn.ops.apply_rotary(Q, jnp.arange(T), impl=impl), ("xla",), 1e-6),
    "causal_conv1d": (lambda impl: jaxattn.ops.causal_conv1d(V[:, :, 0], CONV_KERNEL, segment_ids=SEGMENTS,
                                                             impl=impl)[0], ("xla",), 1e-6),
    "delta_rule": (lambda impl: jaxattn.ops.delta_rule(Q, _unit(K), V, jax.nn.sigmoid(GATES), g=GATES, impl=impl,
                                                       chunk_size=16 if impl == "pallas" else 4), ("xla", "pallas"), 1e-4),
    "diagonal_scan": (lambda impl: jaxattn.ops.diagonal_scan(jnp.exp(GATES), K[..., 0], impl=impl)[0],
                      ("xla", "pallas"), 1e-5),
    "fft_convolution": (lambda impl: jaxattn.ops.fft_convolution(V[:, :, 0], *FFT_KERNELS, impl=impl),
                        ("xla",), 1e-5),
    "linear_attention": (lambda impl: jaxattn.ops.linear_attention(Q, K, V, g=GATES, impl=impl,
                                                                   chunk_size=16 if impl == "pallas" else 4),
                         ("xla", "pallas"), 1e-4),
    "lmul_dot_general": (lambda impl: jaxattn.ops.lmul_dot_general(Q[0, 0], K[0, 0].T, (((1,), (0,)), ((), ())),
                                                                   mantissa_bits=3, impl=impl), ("xla", "pallas"), 1e-6),
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


@pytest.mark.parametrize("op, impl", [(op, impl) for op, (_, impls, _) in CASES.items() for impl in impls])
def test_each_impl_agrees_with_the_reference(op, impl):
    call, _, rtol = CASES[op]
    want = call("reference")
    got = call(impl)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert relative_error(got, want) < rtol


@pytest.mark.parametrize("op", CASES)
def test_unknown_impl_is_refused_naming_the_op(op):
    call, _, _ = CASES[op]
    with pytest.raises(ValueError, match=rf"{op}: impl='fastest' is not one of 'auto', 'reference'"):
        call("fastest")

"""Bad input gets one kind of error everywhere: ValueError / TypeError naming the argument and what
it must be (never an IndexError, a ZeroDivisionError or a silently wrong mask); and a custom
``dot_general`` meets ``impl`` by the dispatcher's one rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import (
    causal_conv1d, delta_rule, diagonal_scan, fft_convolution, linear_attention, s4d_kernel, softmax_attention,
    tensor_attention, tensor_attention_poly,
)
from jaxattn.ops.dispatch import resolve_impl

X = jnp.ones((1, 4, 2, 2))
EMPTY = jnp.ones((1, 0, 2, 2))
IDS = jnp.zeros((1, 4), jnp.int32)

CASES = {
    "softmax kv_lengths past the sequence": (lambda: softmax_attention(X, X, X, kv_lengths=jnp.array([9])),
                                             ValueError, r"`kv_lengths` must lie in \[0, 4\]"),
    "softmax negative kv_lengths": (lambda: softmax_attention(X, X, X, kv_lengths=jnp.array([-1])),
                                    ValueError, r"`kv_lengths` must lie in \[0, 4\]"),
    "softmax float kv_lengths": (lambda: softmax_attention(X, X, X, kv_lengths=jnp.array([2.5])),
                                 TypeError, "`kv_lengths` must be integers"),
    "softmax int queries": (lambda: softmax_attention(*(jnp.ones((1, 4, 2, 2), jnp.int32),) * 3),
                            TypeError, "`q` must be floating point"),
    "softmax scale string": (lambda: softmax_attention(X, X, X, scale="0.5"), TypeError, "`scale` must be a Python number"),
    "diagonal_scan T = 0": (lambda: diagonal_scan(jnp.ones((2, 0, 3)), jnp.ones((2, 0, 3))), ValueError,
                            r"the sequence is empty \(T = 0"),
    "tensor_attention T = 0": (lambda: tensor_attention(*(EMPTY,) * 5), ValueError, r"`q` is an empty sequence \(T = 0\)"),
    "tensor_attention int values": (lambda: tensor_attention(X, X, X, *(jnp.ones((1, 4, 2, 2), jnp.int32),) * 2),
                                    TypeError, "`v1` must be floating point"),
    "tensor_attention_poly chunk_size 0": (lambda: tensor_attention_poly(*(X,) * 5, degree=1, chunk_size=0),
                                           ValueError, "`chunk_size` must be a positive int"),
    "causal_conv1d no taps": (lambda: causal_conv1d(jnp.ones((1, 4, 3)), jnp.ones((0, 3))), ValueError,
                              r"`kernel` must be \[W, C\] with W >= 1"),
    "fft_convolution L = 0": (lambda: fft_convolution(jnp.ones((1, 0, 3)), jnp.ones((3, 0))), ValueError,
                              r"`u` is an empty sequence \(L = 0\)"),
    "s4d_kernel negative length": (lambda: s4d_kernel(*(jnp.ones((3, 2), jnp.complex64),) * 3, jnp.ones(3), -1),
                                   ValueError, "`length` must be a positive int"),
}
SEGMENT_ID_OPS = {
    "softmax_attention": lambda ids: softmax_attention(X, X, X, segment_ids=ids),
    "linear_attention": lambda ids: linear_attention(X, X, X, segment_ids=ids),
    "delta_rule": lambda ids: delta_rule(X, X, X, jnp.ones((1, 4, 2)), segment_ids=ids),
    "tensor_attention": lambda ids: tensor_attention(*(X,) * 5, segment_ids=ids),
    "causal_conv1d": lambda ids: causal_conv1d(X[:, :, 0], jnp.ones((2, 2)), segment_ids=ids),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_naming_the_argument(case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("op", SEGMENT_ID_OPS)
def test_segment_ids_must_be_integers_of_shape_b_t(op):
    with pytest.raises(TypeError, match=f"{op}: `segment_ids` must be integers"):
        SEGMENT_ID_OPS[op](IDS.astype(jnp.float32))
    with pytest.raises(ValueError, match=rf"{op}: `segment_ids` must be \[B, T\] = \(1, 4\)"):
        SEGMENT_ID_OPS[op](IDS[:, :3])


def test_kv_lengths_values_are_checked_eagerly_and_pass_under_jit():
    lengths = jnp.array([3])
    want = softmax_attention(X, X, X, kv_lengths=lengths, impl="reference")
    got = jax.jit(lambda n: softmax_attention(X, X, X, kv_lengths=n, impl="xla"))(lengths)
    np.testing.assert_allclose(got, want, rtol=1e-6)


IMPLS = {"reference": "reference", "xla": "xla", "pallas": "pallas"}


def _exact(*args, **kwargs):
    return jax.lax.dot_general(*args, **kwargs)


@pytest.mark.parametrize("impl, takes, want", [
    ("auto", ("reference", "xla"), "xla"),
    ("pallas", ("reference", "xla"), "xla"),
    ("reference", ("reference", "xla"), "reference"),
    ("xla", ("reference",), "reference"),
    ("auto", ("reference",), "reference"),
])
def test_a_custom_dot_general_runs_on_the_fastest_impl_that_takes_one(impl, takes, want):
    assert resolve_impl("op", impl, IMPLS, dot_general=_exact, takes_dot_general=takes) == want


def test_the_exact_dot_general_leaves_impl_alone():
    assert resolve_impl("op", "pallas", IMPLS, dot_general=jax.lax.dot_general, takes_dot_general=("xla",)) == "pallas"
    with pytest.raises(ValueError, match="op: takes no custom dot_general"):
        resolve_impl("op", "xla", IMPLS, dot_general=_exact)


def test_ops_route_a_custom_dot_general_whatever_impl():
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return jax.lax.dot_general(*args, **kwargs)

    q = jax.random.normal(jax.random.key(0), (1, 5, 2, 4))
    for op in (softmax_attention, linear_attention):
        calls.clear()
        got = op(q, q, q, impl="pallas", dot_general=counting)
        np.testing.assert_allclose(got, op(q, q, q, impl="reference"), rtol=1e-5, atol=1e-6)
        assert calls, f"{op.__name__} with impl='pallas' should run its products through the dot_general"

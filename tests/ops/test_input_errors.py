"""Bad input gets one kind of error everywhere: ValueError / TypeError naming the argument and what
it must be (never an IndexError, a ZeroDivisionError or a silently wrong mask); and a custom
``dot_general`` meets ``impl`` by the dispatcher's one rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import (
    apply_rotary, attention_distillation_loss, causal_conv1d, delta_rule, diagonal_scan, fft_convolution,
    linear_attention, s4_c_from_c_tilde, s4d_kernel, softmax_attention, tensor_attention, tensor_attention_poly,
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
                            r"`b` is an empty sequence \(T = 0\)"),
    "tensor_attention T = 0": (lambda: tensor_attention(*(EMPTY,) * 5), ValueError, r"`q` is an empty sequence \(T = 0\)"),
    "softmax Tq = 0": (lambda: softmax_attention(EMPTY, X, X), ValueError,
                       r"softmax_attention: `q` is an empty sequence \(Tq = 0\)"),
    "softmax Tk = 0": (lambda: softmax_attention(X, EMPTY, EMPTY), ValueError,
                       r"softmax_attention: `k` is an empty sequence \(Tk = 0\)"),
    "linear_attention T = 0": (lambda: linear_attention(*(EMPTY,) * 3), ValueError,
                               r"linear_attention: `q` is an empty sequence \(T = 0\)"),
    "delta_rule T = 0": (lambda: delta_rule(*(EMPTY,) * 3, jnp.ones((1, 0, 2))), ValueError,
                         r"delta_rule: `q` is an empty sequence \(T = 0\)"),
    "tensor_attention_poly T = 0": (lambda: tensor_attention_poly(*(EMPTY,) * 5, degree=1), ValueError,
                                    r"tensor_attention_poly: `q` is an empty sequence \(T = 0\)"),
    "attention_distillation_loss T = 0": (lambda: attention_distillation_loss(*(EMPTY,) * 4), ValueError,
                                          r"attention_distillation_loss: `q` is an empty sequence \(T = 0\)"),
    "causal_conv1d T = 0": (lambda: causal_conv1d(jnp.ones((1, 0, 3)), jnp.ones((2, 3))), ValueError,
                            r"causal_conv1d: `x` is an empty sequence \(T = 0\)"),
    "apply_rotary T = 0": (lambda: apply_rotary(EMPTY, jnp.arange(0)), ValueError,
                           r"apply_rotary: `x` is an empty sequence \(T = 0\)"),
    "tensor_attention int values": (lambda: tensor_attention(X, X, X, *(jnp.ones((1, 4, 2, 2), jnp.int32),) * 2),
                                    TypeError, "`v1` must be floating point"),
    "tensor_attention_poly chunk_size 0": (lambda: tensor_attention_poly(*(X,) * 5, degree=1, chunk_size=0),
                                           ValueError, "`chunk_size` must be a positive int"),
    "causal_conv1d no taps": (lambda: causal_conv1d(jnp.ones((1, 4, 3)), jnp.ones((0, 3))), ValueError,
                              r"`kernel` must be \[W, C\] with W >= 1"),
    "fft_convolution L = 0": (lambda: fft_convolution(jnp.ones((1, 0, 3)), jnp.ones((3, 0))), ValueError,
                              r"`u` is an empty sequence \(L = 0\)"),
    "s4_c_from_c_tilde a_bar of P modes": (lambda: s4_c_from_c_tilde(jnp.ones((3, 2, 2)), jnp.ones((3, 2)), 8),
                                           ValueError, r"`a_bar` must be \[H, N, N\] = \(3, 4, 4\)"),
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


def test_kv_lengths_values_are_checked_eagerly_and_skipped_under_jit():
    lengths = jnp.array([3])
    want = softmax_attention(X, X, X, kv_lengths=lengths, impl="reference")
    compiled = jax.jit(lambda n: softmax_attention(X, X, X, kv_lengths=n, impl="xla"))
    np.testing.assert_allclose(compiled(lengths), want, rtol=1e-6)
    past_the_end = jnp.array([9])
    with pytest.raises(ValueError, match=r"`kv_lengths` must lie in \[0, 4\]"):
        softmax_attention(X, X, X, kv_lengths=past_the_end, impl="xla")
    # Under a trace the values are unknown: the check is skipped, not faked (no error, no clamping).
    assert compiled(past_the_end).shape == X.shape


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


F64 = np.ones((1, 4, 2), np.float64)
PALLAS_REFUSALS = {
    "linear_attention": (lambda: linear_attention(X, X, X, segment_ids=IDS, impl="pallas"), "segment_ids"),
    "delta_rule": (lambda: delta_rule(X, X, X, jnp.ones((1, 4, 2)), segment_ids=IDS, impl="pallas"), "segment_ids"),
    "softmax_attention": (lambda: softmax_attention(X, X, X, kv_lengths=jnp.array([3]), impl="pallas"), "kv_lengths"),
    "tensor_attention": (lambda: tensor_attention(*(X,) * 5, segment_ids=IDS, impl="pallas"), "segment_ids"),
    "diagonal_scan": (lambda: diagonal_scan(F64, F64, impl="pallas"), "dtype float64"),
}


@pytest.mark.parametrize("op", PALLAS_REFUSALS)
def test_pallas_refuses_what_its_kernels_do_not_support_with_one_error(op):
    call, unsupported = PALLAS_REFUSALS[op]
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match=f"{op}: impl='pallas' does not support {unsupported}"):
            call()


def test_the_dispatcher_refuses_pallas_only_for_the_exact_product():
    with pytest.raises(ValueError, match="op: impl='pallas' does not support segment_ids; use impl='xla'"):
        resolve_impl("op", "pallas", IMPLS, pallas_unsupported="segment_ids")
    assert resolve_impl("op", "xla", IMPLS, pallas_unsupported="segment_ids") == "xla"
    # A custom dot_general moves the call off the kernels before the refusal applies.
    assert resolve_impl("op", "pallas", IMPLS, pallas_unsupported="segment_ids", dot_general=_exact,
                        takes_dot_general=("xla",)) == "xla"


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

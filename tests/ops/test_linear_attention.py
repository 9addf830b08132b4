"""linear_attention: the chunked XLA path against the token-by-token reference, forward and backward;
signed transitions (``g_negative``) also against a float64 loop and in the Pallas interpreter."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import linear_attention


def relative_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)


def make_inputs(seed, batch=2, length=70, heads=3, key_dim=12, value_dim=10, gates=None, segments=False):
    keys = jax.random.split(jax.random.key(seed), 6)
    q = jax.random.normal(keys[0], (batch, length, heads, key_dim))
    k = jax.random.normal(keys[1], (batch, length, heads, key_dim))
    v = jax.random.normal(keys[2], (batch, length, heads, value_dim))
    kwargs = {}
    if gates in ("g", "both"):
        kwargs["g"] = jax.nn.log_sigmoid(jax.random.normal(keys[3], (batch, length, heads)) + 3.0)
    if gates in ("g_gamma", "both"):
        kwargs["g_gamma"] = jnp.log(1 - 2.0 ** (-5.0 - jnp.arange(heads, dtype=jnp.float32)))
    if segments:
        starts = jax.random.bernoulli(keys[4], 0.08, (batch, length))
        kwargs["segment_ids"] = jnp.cumsum(starts, axis=1).astype(jnp.int32)
    return q, k, v, kwargs


CASES = {
    "plain": dict(),
    "normalized": dict(normalize=True, positive=True),
    "g_gamma": dict(gates="g_gamma"),
    "gated": dict(gates="g"),
    "gated+decay": dict(gates="both"),
    "packed": dict(segments=True),
    "packed+gated": dict(segments=True, gates="g"),
    "initial_state": dict(initial_state=True),
    "gated+initial_state": dict(gates="g", initial_state=True),
    "noncausal": dict(causal=False),
    "noncausal+packed": dict(causal=False, segments=True, initial_state=True),
    "noncausal+normalized": dict(causal=False, normalize=True, positive=True),
}


def build(case, seed=0, length=70, batch=2):
    case = dict(case)
    q, k, v, kwargs = make_inputs(seed, batch=batch, length=length, gates=case.pop("gates", None), segments=case.pop("segments", False))
    if case.pop("positive", False):  # a normaliser needs positive features (e.g. elu + 1)
        q, k = jax.nn.elu(q) + 1, jax.nn.elu(k) + 1
    kwargs["causal"] = case.pop("causal", True)
    kwargs["normalize"] = case.pop("normalize", False)
    if case.pop("initial_state", False):
        value_dim = v.shape[-1] + kwargs["normalize"]
        kwargs["initial_state"] = jax.random.normal(jax.random.key(seed + 7), (q.shape[0], q.shape[2], q.shape[3], value_dim))
        if kwargs["normalize"]:
            kwargs["initial_state"] = jnp.abs(kwargs["initial_state"])
    assert not case
    return q, k, v, kwargs


def tolerance(kwargs):
    gated = "g" in kwargs or "g_gamma" in kwargs
    return 1e-3 if gated else 1e-4


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("length, chunk_size", [(70, 16), (64, 64), (5, 16)])
def test_forward_matches_reference(name, length, chunk_size):
    q, k, v, kwargs = build(CASES[name], length=length)
    want, want_state = linear_attention(q, k, v, output_final_state=True, impl="reference", **kwargs)
    got, got_state = linear_attention(q, k, v, output_final_state=True, impl="xla", chunk_size=chunk_size, **kwargs)
    assert got.shape == v.shape and got.dtype == v.dtype
    assert relative_error(got, want) < tolerance(kwargs)
    assert relative_error(got_state, want_state) < tolerance(kwargs)


def check_gradients_match_reference(name: str, impl: str, chunk_size: int, batch: int = 2) -> None:
    """Gradients of every input (q, k, v, gates, initial state) of ``impl`` against the reference."""
    q, k, v, kwargs = build(CASES[name], length=37, batch=batch)
    weights = jax.random.normal(jax.random.key(9), v.shape)
    differentiable = {"q": q, "k": k, "v": v}
    for key in ("g", "g_gamma", "initial_state"):
        if key in kwargs:
            differentiable[key] = kwargs.pop(key)

    def loss(inputs, impl):
        inputs = dict(inputs)
        o, state = linear_attention(
            inputs.pop("q"), inputs.pop("k"), inputs.pop("v"), output_final_state=True, impl=impl,
            chunk_size=chunk_size, **inputs, **kwargs,
        )
        return jnp.sum(o * weights) + 0.1 * jnp.sum(state**2)

    want = jax.grad(loss)(differentiable, "reference")
    got = jax.grad(loss)(differentiable, impl)
    for key in want:
        assert relative_error(got[key], want[key]) < tolerance({**kwargs, **differentiable}), key


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_reference(name):
    check_gradients_match_reference(name, "xla", chunk_size=8)


@pytest.mark.parametrize("name", CASES)
def test_one_sequence_matches_reference(name):
    """B = 1 takes its own layout in the xla path (the scan slices the input in place)."""
    q, k, v, kwargs = build(CASES[name], length=37, batch=1)
    want, want_state = linear_attention(q, k, v, output_final_state=True, impl="reference", **kwargs)
    got, got_state = linear_attention(q, k, v, output_final_state=True, impl="xla", chunk_size=8, **kwargs)
    assert relative_error(got, want) < tolerance(kwargs)
    assert relative_error(got_state, want_state) < tolerance(kwargs)
    check_gradients_match_reference(name, "xla", chunk_size=8, batch=1)


def test_reference_is_the_recurrence_written_out():
    """The oracle itself against a NumPy float64 loop (plain, gated, packed)."""
    q, k, v, kwargs = make_inputs(3, batch=1, length=9, heads=2, key_dim=3, value_dim=2, gates="both", segments=True)
    o = linear_attention(q, k, v, impl="reference", scale=0.5, **kwargs)
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    log_decay = np.asarray(kwargs["g"], np.float64) + np.asarray(kwargs["g_gamma"], np.float64)
    segments = np.asarray(kwargs["segment_ids"])
    expected = np.zeros_like(v)
    for h in range(2):
        state = np.zeros((3, 2))
        for t in range(9):
            keep = t == 0 or segments[0, t] == segments[0, t - 1]
            state = (np.exp(log_decay[0, t, h]) if keep else 0.0) * state + np.outer(k[0, t, h], v[0, t, h])
            expected[0, t, h] = 0.5 * q[0, t, h] @ state
    np.testing.assert_allclose(np.asarray(o), expected, rtol=1e-5, atol=1e-5)


def test_final_state_continues_the_sequence():
    """Running two halves with the state passed on equals running the whole sequence."""
    q, k, v, kwargs = make_inputs(4, length=50, gates="both")
    whole = linear_attention(q, k, v, impl="xla", chunk_size=16, **kwargs)
    first, state = linear_attention(
        q[:, :23], k[:, :23], v[:, :23], g=kwargs["g"][:, :23], g_gamma=kwargs["g_gamma"],
        output_final_state=True, impl="xla", chunk_size=16,
    )
    second = linear_attention(
        q[:, 23:], k[:, 23:], v[:, 23:], g=kwargs["g"][:, 23:], g_gamma=kwargs["g_gamma"],
        initial_state=state, impl="xla", chunk_size=16,
    )
    assert relative_error(jnp.concatenate([first, second], axis=1), whole) < 1e-4


def test_bfloat16_inputs():
    q, k, v, _ = make_inputs(5, length=40)
    want = linear_attention(q, k, v, impl="reference")
    got = linear_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), impl="xla", chunk_size=16)
    assert got.dtype == jnp.bfloat16
    # bf16 inputs carry 8 mantissa bits: relative error about 2^-8 per product, summed over T.
    assert relative_error(got, want) < 3e-2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(q=jnp.ones((2, 4, 3))), ValueError, r"`q` must be \[B, T, H, D\]"),
        (dict(k=jnp.ones((2, 4, 3, 5))), ValueError, "`k` must have the shape of `q`"),
        (dict(v=jnp.ones((2, 5, 3, 6))), ValueError, r"`v` must be \[B, T, H, V\]"),
        (dict(g=jnp.ones((2, 4))), ValueError, r"`g` must be \[B, T, H\]"),
        (dict(g_gamma=jnp.ones((2,))), ValueError, r"`g_gamma` must be \[H\]"),
        (dict(g_gamma=jnp.ones((3,)), causal=False), ValueError, "need causal=True"),
        (dict(g_negative=jnp.ones((2, 4), bool)), ValueError, r"`g_negative` must be \[B, T, H\]"),
        (dict(g_negative=jnp.ones((2, 4, 3))), TypeError, "`g_negative` must be bool"),
        (dict(g_negative=jnp.ones((2, 4, 3), bool), normalize=True), ValueError,
         "normalize=True needs positive transitions"),
        (dict(g_negative=jnp.ones((2, 4, 3), bool), causal=False), ValueError, "need causal=True"),
        (dict(initial_state=jnp.ones((2, 3, 4, 5))), ValueError, "`initial_state` must be"),
        (dict(initial_state=jnp.ones((2, 3, 4, 6)), normalize=True), ValueError, "V \\+ 1"),
        (dict(segment_ids=jnp.ones((2, 5), jnp.int32)), ValueError, r"`segment_ids` must be \[B, T\]"),
        (dict(chunk_size=0), ValueError, "`chunk_size` must be a positive int"),
        (dict(q=jnp.ones((2, 4, 3, 4), jnp.int32)), TypeError, "floating point"),
        (dict(impl="cuda"), ValueError, "impl='cuda' is not one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    inputs = dict(q=jnp.ones((2, 4, 3, 4)), k=jnp.ones((2, 4, 3, 4)), v=jnp.ones((2, 4, 3, 6)))
    for key in ("q", "k", "v"):
        if key in kwargs:
            inputs[key] = kwargs.pop(key)
    if inputs["q"].dtype == jnp.int32:
        inputs["k"] = inputs["q"]
    with pytest.raises(error, match=match):
        linear_attention(inputs["q"], inputs["k"], inputs["v"], **kwargs)


# ----------------------------------------------------------------------------- signed transitions


def signed_inputs(seed, length, batch=2, heads=3, key_dim=12, value_dim=10, segments=False, initial_state=False,
                  g_gamma=False):
    """Gated inputs with about a third of the transitions negative (``a_t = -exp(g_t)`` there), drawn
    with NumPy (no per-shape compilation of random ops)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
    q, k = normal(batch, length, heads, key_dim), normal(batch, length, heads, key_dim)
    v = normal(batch, length, heads, value_dim)
    kwargs = {"g": jax.nn.log_sigmoid(normal(batch, length, heads) + 3.0),
              "g_negative": jnp.asarray(rng.random((batch, length, heads)) < 0.3)}
    if g_gamma:
        kwargs["g_gamma"] = jnp.log(1 - 2.0 ** (-5.0 - jnp.arange(heads, dtype=jnp.float32)))
    if segments:
        kwargs["segment_ids"] = jnp.asarray(np.cumsum(rng.random((batch, length)) < 0.08, axis=1), jnp.int32)
    if initial_state:
        kwargs["initial_state"] = normal(batch, heads, key_dim, value_dim)
    return q, k, v, kwargs


def signed_recurrence_float64(q, k, v, kwargs, scale):
    """``S_t = sigma_t exp(g_t + g_gamma) S_{t-1} + k_t^T v_t`` (reset at segment starts), ``o_t = scale q_t S_t``."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    log_decay = np.asarray(kwargs["g"], np.float64) + np.asarray(kwargs.get("g_gamma", 0.0), np.float64)
    sign = np.where(np.asarray(kwargs["g_negative"]), -1.0, 1.0)
    segments = np.asarray(kwargs["segment_ids"]) if "segment_ids" in kwargs else np.zeros(q.shape[:2], int)
    state = np.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[3]))
    if "initial_state" in kwargs:
        state = np.asarray(kwargs["initial_state"], np.float64).copy()
    o = np.zeros_like(v)
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            keep = t == 0 or segments[b, t] == segments[b, t - 1]
            transition = sign[b, t] * np.exp(log_decay[b, t]) * keep  # [H]
            state[b] = transition[:, None, None] * state[b] + np.einsum("hk,hv->hkv", k[b, t], v[b, t])
            o[b, t] = scale * np.einsum("hk,hkv->hv", q[b, t], state[b])
    return o, state


def test_signed_transitions_match_a_float64_loop():
    """The reference and the chunked path (chunks of 4 over T = 13) against the recurrence written out."""
    q, k, v, kwargs = signed_inputs(20, length=13, segments=True, initial_state=True, g_gamma=True)
    want, want_state = signed_recurrence_float64(q, k, v, kwargs, scale=0.5)
    for impl in ("reference", "xla"):
        run = jax.jit(functools.partial(linear_attention, scale=0.5, output_final_state=True, impl=impl, chunk_size=4))
        o, state = run(q, k, v, **kwargs)
        assert relative_error(o, want) < 1e-5, impl
        assert relative_error(state, want_state) < 1e-5, impl


SIGNED_CASES = {  # T and chunk size: T = 1, 5, 63, 130 leave a partial chunk, T = 65 with C = 13 does not
    "T1+initial_state": dict(length=1, chunk_size=16, initial_state=True),  # else dL/dg = 0
    "T5": dict(length=5, chunk_size=4),
    "T63+packed": dict(length=63, chunk_size=16, segments=True),
    "T65+g_gamma+initial_state": dict(length=65, chunk_size=13, g_gamma=True, initial_state=True),
    "T130+packed+initial_state": dict(length=130, chunk_size=64, batch=1, segments=True, initial_state=True),
}


def signed_loss_and_gradients(q, k, v, kwargs, impl, chunk_size):
    """``((loss, (o, final state)), gradients)`` of a loss of every output, for q, k, v, g and the
    initial state (one compiled function per call: the suite is short of time)."""
    differentiable = {"q": q, "k": k, "v": v, **{key: kwargs[key] for key in ("g", "initial_state") if key in kwargs}}
    fixed = {key: value for key, value in kwargs.items() if key not in differentiable}
    weights = jnp.cos(jnp.arange(v.size, dtype=jnp.float32).reshape(v.shape))

    def loss(inputs):
        inputs = dict(inputs)
        o, state = linear_attention(inputs.pop("q"), inputs.pop("k"), inputs.pop("v"), output_final_state=True,
                                    impl=impl, chunk_size=chunk_size, **inputs, **fixed)
        return jnp.sum(o * weights) + 0.1 * jnp.sum(state**2), (o, state)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(differentiable)


@pytest.mark.parametrize("name", SIGNED_CASES)
def test_signed_transitions_match_reference(name):
    """Forward, final state and the gradients of q, k, v, g and the initial state."""
    case = dict(SIGNED_CASES[name])
    chunk_size = case.pop("chunk_size")
    q, k, v, kwargs = signed_inputs(21, **case)
    (_, want), want_grads = signed_loss_and_gradients(q, k, v, kwargs, "reference", chunk_size)
    (_, got), got_grads = signed_loss_and_gradients(q, k, v, kwargs, "xla", chunk_size)
    # fp32 chunked sums against the token-by-token ones, over at most 130 tokens: measured <= 5e-7.
    for key, got_a, want_a in zip(("o", "final state"), got, want):
        assert relative_error(got_a, want_a) < 1e-5, key
    for key in want_grads:
        assert relative_error(got_grads[key], want_grads[key]) < 1e-5, key


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_all_positive_signs_are_the_gated_op(impl):
    q, k, v, kwargs = signed_inputs(22, length=37, segments=True, initial_state=True, g_gamma=True)
    kwargs["g_negative"] = jnp.zeros_like(kwargs["g_negative"])
    run = jax.jit(functools.partial(linear_attention, output_final_state=True, impl=impl, chunk_size=8))
    signed = run(q, k, v, **kwargs)
    del kwargs["g_negative"]
    gated = run(q, k, v, **kwargs)
    for got, want in zip(signed, gated):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_minus_one_transitions_flip_the_state(impl):
    """``a_t = -1`` (``g = 0``, negative) and no new keys: ``S_t = (-1)^t S_0``; parity in the output's sign."""
    batch, length, heads, dim = 2, 11, 2, 3
    q = jax.random.normal(jax.random.key(23), (batch, length, heads, dim))
    zeros = jnp.zeros_like(q)
    initial = jax.random.normal(jax.random.key(24), (batch, heads, dim, dim))
    negative = jnp.ones((batch, length, heads), bool)
    run = jax.jit(functools.partial(linear_attention, initial_state=initial, output_final_state=True, scale=1.0,
                                    impl=impl, chunk_size=4))
    o, final = run(q, zeros, zeros, g=jnp.zeros((batch, length, heads)), g_negative=negative)
    parity = (-1.0) ** jnp.arange(1, length + 1)[None, :, None, None]
    np.testing.assert_allclose(o, parity * jnp.einsum("bthk,bhkv->bthv", q, initial), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final, -initial, rtol=1e-6)  # T = 11 flips: odd
    # Without g the magnitude is 1: the same flips.
    o_unit, _ = run(q, zeros, zeros, g_negative=negative)
    np.testing.assert_allclose(o_unit, o, rtol=1e-6, atol=1e-6)


def test_signed_transitions_in_the_pallas_interpreter(monkeypatch):
    """The kernels take magnitudes only; the signs are folded into q and k around them, the same for
    both kernels (the Triton-backend one here)."""
    from pallas_kernels.platform import INTERPRET_ENV

    monkeypatch.setenv(INTERPRET_ENV, "gpu")
    q, k, v, kwargs = signed_inputs(25, length=37, initial_state=True, g_gamma=True)
    (_, want), want_grads = signed_loss_and_gradients(q, k, v, kwargs, "reference", 16)
    (_, got), got_grads = signed_loss_and_gradients(q, k, v, kwargs, "pallas", 16)
    for got_a, want_a in zip((*got, *got_grads.values()), (*want, *want_grads.values())):
        assert relative_error(got_a, want_a) < 1e-5  # measured <= 4e-7

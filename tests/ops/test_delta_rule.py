"""delta_rule: the reference against a float64 NumPy loop, the chunked XLA path against the reference
(forward and every gradient), stability at length, and the argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import relative_error

from jaxattn.ops import delta_rule

KEY_DIM, VALUE_DIM, HEADS = 12, 10, 2


def make_inputs(seed, length, steps=1, batch=2, gated=True, segments=True, initial_state=True, beta_max=2.0,
                key_dim=KEY_DIM, value_dim=VALUE_DIM, heads=HEADS):
    """Unit keys (the mixer's normalisation), beta uniform in ``[0, beta_max]``, optional options."""
    keys = jax.random.split(jax.random.key(seed), 7)
    rows = length * steps
    q = jax.random.normal(keys[0], (batch, length, heads, key_dim))
    k = jax.random.normal(keys[1], (batch, rows, heads, key_dim))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(keys[2], (batch, rows, heads, value_dim))
    beta = jax.random.uniform(keys[3], (batch, rows, heads), maxval=beta_max)
    kwargs = dict(householder_steps=steps)
    if gated:
        kwargs["g"] = jax.nn.log_sigmoid(jax.random.normal(keys[4], (batch, length, heads)) + 2.0)
    if segments:
        kwargs["segment_ids"] = jnp.cumsum(jax.random.bernoulli(keys[5], 0.06, (batch, length)), axis=1)
    if initial_state:
        kwargs["initial_state"] = jax.random.normal(keys[6], (batch, heads, key_dim, value_dim))
    return (q, k, v, beta), kwargs


def numpy_recurrence(q, k, v, beta, householder_steps=1, g=None, segment_ids=None, initial_state=None):
    """The recurrence written out in float64, one token, one step at a time."""
    q, k, v, beta = (np.asarray(a, np.float64) for a in (q, k, v, beta))
    batch, length, heads, key_dim = q.shape
    n = householder_steps
    o = np.zeros((batch, length, heads, v.shape[-1]))
    final = np.zeros((batch, heads, key_dim, v.shape[-1]))
    for b in range(batch):
        for h in range(heads):
            state = np.zeros((key_dim, v.shape[-1])) if initial_state is None else np.asarray(initial_state, np.float64)[b, h]
            for t in range(length):
                if segment_ids is not None and t > 0 and segment_ids[b, t] != segment_ids[b, t - 1]:
                    state = np.zeros_like(state)
                if g is not None:
                    state = np.exp(np.float64(g[b, t, h])) * state
                for j in range(t * n, t * n + n):
                    state = state + np.outer(k[b, j, h], beta[b, j, h] * (v[b, j, h] - k[b, j, h] @ state))
                o[b, t, h] = key_dim**-0.5 * q[b, t, h] @ state
            final[b, h] = state
    return o, final


@pytest.mark.parametrize("steps, gated", [(1, False), (2, True), (3, True)])
def test_reference_is_the_recurrence(steps, gated):
    args, kwargs = make_inputs(0, length=19, steps=steps, gated=gated)
    got, got_state = delta_rule(*args, output_final_state=True, impl="reference", **kwargs)
    want, want_state = numpy_recurrence(*args, **kwargs)
    assert relative_error(got, want) < 1e-5
    assert relative_error(got_state, want_state) < 1e-5


def loss_against(seed, o_shape, state_shape):
    """A scalar that weighs every output and final-state entry differently (so no gradient cancels)."""
    w_o = jax.random.normal(jax.random.key(seed), o_shape)
    w_state = jax.random.normal(jax.random.key(seed + 1), state_shape)
    return lambda o, state: jnp.sum(o * w_o) + jnp.sum(state * w_state)


# (steps, T, chunk_size, options): every T of the contract, chunk boundaries on and off the
# sequence's end, chunks of one token (chunk_size < steps), the default chunk; "full" is gates,
# packed segments, an initial state and beta in [0, 2], "plain" none of them and beta in [0, 1].
CASES = [(1, 1, 16, "full"), (1, 5, 16, "plain"), (1, 63, 16, "full"), (1, 64, 64, "plain"),
         (1, 65, 64, "full"), (1, 200, 32, "plain"), (2, 5, 4, "full"), (2, 65, 16, "full"),
         (2, 200, 64, "plain"), (3, 1, 16, "plain"), (3, 63, 2, "full"), (3, 64, 64, "full")]


def check_matches_reference(impl, steps, length, chunk_size, *, gated, segments, initial_state, beta_max,
                            tolerance=1e-4, gradient_tolerance=1e-3):
    """``impl`` against the reference: outputs, final state and the gradients of a loss weighing both
    with respect to q, k, v, beta and (where given) g and the initial state."""
    args, kwargs = make_inputs(length + steps, length, steps, gated=gated, segments=segments,
                               initial_state=initial_state, beta_max=beta_max)
    differentiable = {"args": args, **{name: kwargs[name] for name in ("g", "initial_state") if name in kwargs}}
    fixed = {name: value for name, value in kwargs.items() if name not in differentiable}
    batch, _, heads, key_dim = args[0].shape
    loss = loss_against(length, (batch, length, heads, VALUE_DIM), (batch, heads, key_dim, VALUE_DIM))

    def run(impl):
        def objective(p):
            o, state = delta_rule(*p["args"], output_final_state=True, impl=impl, chunk_size=chunk_size,
                                  **{k: p[k] for k in p if k != "args"}, **fixed)
            return loss(o, state), (o, state)

        return jax.jit(jax.value_and_grad(objective, has_aux=True))(differentiable)

    (_, (want_o, want_state)), want_grads = run("reference")
    (_, (got_o, got_state)), got_grads = run(impl)
    assert got_o.shape == (batch, length, heads, VALUE_DIM) and got_o.dtype == jnp.float32
    assert relative_error(got_o, want_o) < tolerance
    assert relative_error(got_state, want_state) < tolerance
    names = ["q", "k", "v", "beta"] + [name for name in ("g", "initial_state") if name in differentiable]
    flat_got = list(got_grads["args"]) + [got_grads[name] for name in names[4:]]
    flat_want = list(want_grads["args"]) + [want_grads[name] for name in names[4:]]
    for name, got, want in zip(names, flat_got, flat_want):
        assert np.all(np.isfinite(got)), name
        assert relative_error(got, want) < gradient_tolerance, name


@pytest.mark.parametrize("steps, length, chunk_size, options", CASES)
def test_xla_matches_reference_forward_and_gradients(steps, length, chunk_size, options):
    full = options == "full"
    check_matches_reference("xla", steps, length, chunk_size, gated=full, segments=full, initial_state=full,
                            beta_max=2.0 if full else 1.0)


def test_chunk_size_does_not_change_the_result():
    args, kwargs = make_inputs(3, length=50, steps=2)
    results = [delta_rule(*args, impl="xla", chunk_size=size, **kwargs) for size in (2, 14, 1000)]
    for other in results[1:]:
        assert relative_error(other, results[0]) < 1e-5


def test_segments_are_independent_sequences():
    """Packing two sequences with segment ids gives each one's own result (the second from zero)."""
    args, kwargs = make_inputs(4, length=30, steps=2, segments=False, initial_state=False, batch=1)
    ids = jnp.where(jnp.arange(30) < 12, 0, 1)[None]
    packed = delta_rule(*args, segment_ids=ids, impl="xla", chunk_size=8, **kwargs)
    q, k, v, beta = args
    g = kwargs.pop("g")
    first = delta_rule(q[:, :12], k[:, :24], v[:, :24], beta[:, :24], g=g[:, :12], impl="reference", **kwargs)
    second = delta_rule(q[:, 12:], k[:, 24:], v[:, 24:], beta[:, 24:], g=g[:, 12:], impl="reference", **kwargs)
    assert relative_error(packed, jnp.concatenate([first, second], axis=1)) < 1e-5


def test_bf16_inputs_keep_an_fp32_state():
    args, kwargs = make_inputs(5, length=40, steps=1)
    low = [a.astype(jnp.bfloat16) for a in args]
    o, state = delta_rule(*low, output_final_state=True, impl="xla", chunk_size=16, **kwargs)
    want, want_state = delta_rule(*[a.astype(jnp.float32) for a in low], output_final_state=True,
                                  impl="reference", **kwargs)
    assert o.dtype == jnp.bfloat16 and state.dtype == jnp.float32
    assert relative_error(o, want) < 2e-2
    assert relative_error(state, want_state) < 1e-4


def near_reflections(length, dim=16, seed=6):
    """One sequence, one head: unit keys and beta in [1.9, 2] (transition eigenvalues near -1)."""
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (1, length, 1, dim))
    k = jax.random.normal(keys[1], (1, length, 1, dim))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(keys[2], (1, length, 1, dim))
    beta = jax.random.uniform(keys[3], (1, length, 1), minval=1.9, maxval=2.0)
    return q, k, v, beta


def test_stable_at_length_with_beta_near_two():
    """T = 65536 steps with beta in [1.9, 2] (eigenvalues near -1): no NaN or Inf, and the chunked
    final state stays within 1e-2 of the token-by-token one; the float64 loop says which one drifts."""
    q, k, v, beta = near_reflections(65536)
    o, state = delta_rule(q, k, v, beta, output_final_state=True, impl="xla")
    _, want_state = delta_rule(q, k, v, beta, output_final_state=True, impl="reference")
    assert np.all(np.isfinite(o)) and np.all(np.isfinite(state))
    assert relative_error(state, want_state) < 1e-2
    exact = float64_final_state(k[0, :, 0], v[0, :, 0], beta[0, :, 0])
    assert relative_error(state[0, 0], exact) < 1e-2
    assert relative_error(want_state[0, 0], exact) < 1e-2


def float64_final_state(k, v, beta):
    k, v, beta = (np.asarray(a, np.float64) for a in (k, v, beta))
    state = np.zeros((k.shape[1], v.shape[1]))
    for k_t, v_t, beta_t in zip(k, v, beta):
        state += np.outer(k_t, beta_t * (v_t - k_t @ state))
    return state


@pytest.mark.parametrize("change, message", [
    (dict(householder_steps=0), "householder_steps"),
    (dict(householder_steps=2), r"`k` must be \[B, T\*n, H, K\]"),
    (dict(k=lambda a: a[..., :-1]), "`k`"),
    (dict(v=lambda a: a[:, :-1]), "`v`"),
    (dict(beta=lambda a: a[..., None]), "`beta`"),
    (dict(q=lambda a: a.astype(jnp.int32)), "`q` must be floating point"),
    (dict(g=jnp.zeros((2, 9, HEADS))), "`g`"),
    (dict(initial_state=jnp.zeros((2, HEADS, VALUE_DIM, KEY_DIM))), "`initial_state`"),
    (dict(segment_ids=jnp.zeros((2, 9), jnp.int32)), "`segment_ids`"),
    (dict(chunk_size=0), "`chunk_size`"),
    (dict(impl="fast"), "impl='fast' is not one of 'auto', 'reference', 'xla', 'pallas'"),
])
def test_bad_arguments_are_named(change, message):
    (q, k, v, beta), _ = make_inputs(7, length=8, gated=False, segments=False, initial_state=False)
    arrays = dict(q=q, k=k, v=v, beta=beta)
    options = {}
    for name, value in change.items():
        if name in arrays:
            arrays[name] = value(arrays[name])
        else:
            options[name] = value
    with pytest.raises((ValueError, TypeError), match=message):
        delta_rule(arrays["q"], arrays["k"], arrays["v"], arrays["beta"], **options)

"""S5 against an independent token-by-token implementation in float64, forward and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.nn import S5
from jaxattn.nn.hippo import block_diagonal_hippo
from tests.nn.test_attention_layers import run_steps


def oracle_s5(params, x, *, conj_sym, discretization, causal, step_rescale=1.0):
    """S5 written out from the paper one token at a time, in float64 (jax.numpy, so differentiable).

    x: [B, L, H] -> y: [B, L, H].
    """
    f64 = lambda v: jnp.asarray(v, jnp.float64)  # noqa: E731
    lam = f64(params["Lambda_re"]) + 1j * f64(params["Lambda_im"])
    b_tilde = f64(params["B"][..., 0]) + 1j * f64(params["B"][..., 1])
    dt = step_rescale * jnp.exp(f64(params["log_step"][:, 0]))
    if discretization == "zoh":
        lam_bar = jnp.exp(lam * dt)
        b_bar = ((lam_bar - 1) / lam)[:, None] * b_tilde
    else:
        lam_bar = (1 + dt * lam / 2) / (1 - dt * lam / 2)
        b_bar = (dt / (1 - dt * lam / 2))[:, None] * b_tilde
    names = ("C",) if causal else ("C1", "C2")
    cs = [f64(params[n][..., 0]) + 1j * f64(params[n][..., 1]) for n in names]
    x = f64(x)
    length = x.shape[1]

    def run(order):
        state = jnp.zeros((x.shape[0], lam.shape[0]), jnp.complex128)
        states = [None] * length
        for t in order:
            state = lam_bar * state + x[:, t] @ b_bar.T
            states[t] = state
        return jnp.stack(states, axis=1)

    factor = 2.0 if conj_sym else 1.0
    y = factor * jnp.real(run(range(length)) @ cs[0].T)
    if not causal:
        y = y + factor * jnp.real(run(range(length - 1, -1, -1)) @ cs[1].T)
    return y + f64(params["D"]) * x


CASES = [
    dict(conj_sym=True, discretization="zoh", causal=True),
    dict(conj_sym=False, discretization="zoh", causal=True),
    dict(conj_sym=True, discretization="bilinear", causal=True),
    dict(conj_sym=False, discretization="bilinear", causal=False),
    dict(conj_sym=True, discretization="zoh", causal=False),
]


def init_s5(case, features=5, length=13, state_size=8, blocks=2, **extra):
    model = S5(state_size=state_size, blocks=blocks, **case, **extra)
    x = jax.random.normal(jax.random.key(0), (2, length, features))
    params = nn.unbox(model.init(jax.random.key(1), x))["params"]
    # Larger timescales than the init so that the state carries over many steps.
    params["log_step"] = params["log_step"] + 2.0
    return model, params, x


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_forward_matches_float64_oracle(case):
    model, params, x = init_s5(case)
    y = model.apply({"params": params}, x)
    with jax.enable_x64(True):
        expected = oracle_s5(params, x, **case)
    # fp32 against fp64: relative error of a few ulps per step over 13 steps.
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gradients_match_float64_oracle(case):
    model, params, x = init_s5(case, length=9)
    weights = jax.random.normal(jax.random.key(2), x.shape)
    grads = jax.grad(lambda p, x: jnp.sum(model.apply({"params": p}, x) * weights), argnums=(0, 1))(params, x)
    with jax.enable_x64(True):
        expected = jax.grad(lambda p, x: jnp.sum(oracle_s5(p, x, **case) * weights), argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        scale = float(np.max(np.abs(want))) + 1e-6
        np.testing.assert_allclose(np.asarray(got) / scale, np.asarray(want) / scale, atol=2e-4)


def test_step_rescale_scales_every_timescale():
    case = dict(conj_sym=True, discretization="zoh", causal=True)
    model, params, x = init_s5(case, step_rescale=0.25)
    with jax.enable_x64(True):
        expected = oracle_s5(params, x, step_rescale=0.25, **case)
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), np.asarray(expected), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conj_sym", [True, False])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_step_equals_call(conj_sym, discretization):
    case = dict(conj_sym=conj_sym, discretization=discretization, causal=True)
    model, params, x = init_s5(case, length=17)
    steps = run_steps(model, {"params": params}, x)
    np.testing.assert_allclose(np.asarray(steps), np.asarray(model.apply({"params": params}, x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_segments_are_independent(causal):
    """A packed pair of sequences gives the same outputs as each sequence alone."""
    case = dict(conj_sym=True, discretization="zoh", causal=causal)
    model, params, x = init_s5(case, length=12)
    segment_ids = jnp.array([[1] * 5 + [2] * 7, [1] * 12])
    packed = model.apply({"params": params}, x, segment_ids=segment_ids)
    first = model.apply({"params": params}, x[:1, :5])
    second = model.apply({"params": params}, x[:1, 5:])
    np.testing.assert_allclose(np.asarray(packed[0, :5]), np.asarray(first[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(packed[0, 5:]), np.asarray(second[0]), rtol=1e-5, atol=1e-5)
    whole = model.apply({"params": params}, x[1:])
    np.testing.assert_allclose(np.asarray(packed[1]), np.asarray(whole[0]), rtol=1e-5, atol=1e-5)


def test_clip_eigs_bounds_the_real_part():
    case = dict(conj_sym=True, discretization="zoh", causal=True)
    model, params, x = init_s5(case, clip_eigs=True)
    unstable = dict(params, Lambda_re=jnp.abs(params["Lambda_re"]))
    clipped = dict(params, Lambda_re=jnp.full_like(params["Lambda_re"], -1e-4))
    np.testing.assert_allclose(
        np.asarray(model.apply({"params": unstable}, x)), np.asarray(model.apply({"params": clipped}, x)), rtol=1e-6
    )


@pytest.mark.parametrize("conj_sym", [True, False])
def test_initial_parameters_follow_the_hippo_spectrum(conj_sym):
    n, blocks, features = 16, 4, 6
    model = S5(state_size=n, blocks=blocks, conj_sym=conj_sym, C_init="lecun_normal")
    params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 3, features))))["params"]
    lam, v, v_inv = block_diagonal_hippo(n, blocks, conj_sym)
    np.testing.assert_allclose(params["Lambda_re"], lam.real, rtol=1e-6)
    np.testing.assert_allclose(params["Lambda_im"], lam.imag, rtol=1e-6, atol=1e-6)
    p = n // 2 if conj_sym else n
    assert params["B"].shape == (p, features, 2) and params["C"].shape == (features, p, 2)
    assert params["log_step"].shape == (p, 1) and params["D"].shape == (features,)
    assert np.all((params["log_step"] >= np.log(1e-3)) & (params["log_step"] <= np.log(1e-1)))
    if not conj_sym:
        # B~ = V^-1 B with a real B: mapping back with V gives a real matrix.
        b_real = v @ (np.asarray(params["B"][..., 0], np.float64) + 1j * np.asarray(params["B"][..., 1], np.float64))
        assert np.max(np.abs(b_real.imag)) < 1e-5 * np.max(np.abs(b_real.real))


@pytest.mark.parametrize(
    "c_init, variance",
    [
        ("trunc_standard_normal", lambda n, h: 1 / n),
        ("lecun_normal", lambda n, h: 1 / (n * h)),
        ("complex_normal", lambda n, h: 0.5),  # drawn in the eigenbasis; V unitary keeps the variance
    ],
)
def test_output_matrix_init_variance(c_init, variance):
    """C~ = C V with C of the stated variance: C~ V^* recovers C, whose parts have that variance."""
    n, features = 64, 48
    model = S5(state_size=n, blocks=1, conj_sym=False, C_init=c_init)
    params = nn.unbox(model.init(jax.random.key(3), jnp.ones((1, 2, features))))["params"]
    _, v, _ = block_diagonal_hippo(n, 1, False)
    c_tilde = np.asarray(params["C"][..., 0], np.float64) + 1j * np.asarray(params["C"][..., 1], np.float64)
    c = c_tilde @ v.conj().T
    measured = np.var(np.concatenate([c.real.ravel(), c.imag.ravel()]))
    # 6144 samples: the sample variance is within ~4 % (2 sigma) of the truth.
    np.testing.assert_allclose(measured, variance(n, features), rtol=0.08)


def test_bad_inputs_raise_clear_errors():
    x = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match=r"x must be \[B, L, H\]"):
        S5(state_size=4).init(jax.random.key(0), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"S5: `segment_ids` must be \[B, L\] = \(2, 5\), got \(2, 4\)"):
        S5(state_size=4).init(jax.random.key(0), x, segment_ids=jnp.ones((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"S5: `segment_ids` must be \[B, L\] = \(2, 5\), got \(1, 5\)"):
        S5(state_size=4).init(jax.random.key(0), x, segment_ids=jnp.ones((1, 5), jnp.int32))  # would broadcast
    with pytest.raises(TypeError, match="S5: `segment_ids` must be integers"):
        S5(state_size=4).init(jax.random.key(0), x, segment_ids=jnp.ones((2, 5), jnp.float32))
    with pytest.raises(ValueError, match="discretization='euler'"):
        S5(state_size=4, discretization="euler").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="C_init='zeros'"):
        S5(state_size=4, C_init="zeros").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="must be even"):
        S5(state_size=6, blocks=2).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="multiple of blocks"):
        S5(state_size=6, blocks=4).init(jax.random.key(0), x)
    model = S5(state_size=4, causal=False)
    params = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="causal=False"):
        model.apply(params, model.init_carry(2), x[:, 0], method=S5.step)

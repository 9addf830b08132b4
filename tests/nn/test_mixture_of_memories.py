"""Mixture-of-Memories: one memory is its underlying mixer, unchosen memories are left bit for bit
as they were, the router is top-k with renormalised weights and receives gradients, the load
balance loss is Switch's, and ``step`` equals ``__call__``. The registry-wide causality and
decoding tests run its variants too (``tests/nn/test_mixer_registry.py``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import unfreeze

from jaxattn.nn import DeltaNet, LinearAttention, MixtureOfMemories
from jaxattn.nn.mixture_of_memories import MEMORIES, load_balancing_loss, top_k_routing
from jaxattn.nn.registry import AUX_LOSS_COLLECTION

WIDTH = 8


def inputs(length=11, batch=2, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, length, WIDTH))


def underlying_mixer(memory: str, negative: bool):
    """The mixer MoM's memories are made of, with MoM's defaults (short convolution, output gate)."""
    if memory == "gated_delta_rule":
        return DeltaNet(num_heads=2, head_dim=4, value_dim=3, gated=True, output_gate=True, negative_eigenvalues=negative,
                        chunk_size=4)
    return LinearAttention(num_heads=2, head_dim=4, feature_map="identity", gate="data", short_conv=4, output_norm=True,
                           output_gate=True, negative_eigenvalues=negative, chunk_size=4)


@pytest.mark.parametrize("memory, negative", [("gated_delta_rule", False), ("gated_linear_attention", True)])
def test_one_memory_with_weight_one_equals_its_mixer(memory, negative):
    """M = 1, k = 1 (the routing weight is exactly 1) and no shared memory: the mixer itself, forward
    and gradients, with the same parameters (MoM's but the router)."""
    value_dim = 3 if memory == "gated_delta_rule" else None
    mom = MixtureOfMemories(num_heads=2, head_dim=4, value_dim=value_dim, num_memories=1, top_k=1, shared_memory=False,
                            memory=memory, negative_eigenvalues=negative, chunk_size=4)
    mixer = underlying_mixer(memory, negative)
    x = inputs()
    variables = unfreeze(mom.init(jax.random.key(1), x))
    router = variables["params"].pop("router")
    assert jax.tree.structure(variables) == jax.tree.structure(mixer.init(jax.random.key(1), x))

    def loss(params, module, extra):
        return jnp.sum(jnp.sin(module.apply({"params": {**params, **extra}}, x)))

    want, want_grad = jax.value_and_grad(loss)(variables["params"], mixer, {})
    got, got_grad = jax.value_and_grad(loss)(variables["params"], mom, {"router": router})
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def router_logits(variables, x):
    """``x W_r + b_r`` with the layer's router parameters."""
    return nn.Dense(variables["params"]["router"]["bias"].value.shape[0]).apply(
        {"params": nn.unbox(variables["params"]["router"])}, x)


def forced_router(variables, never: int, memories: int):
    """The variables with a router that never picks memory ``never`` (zero weights, a bias of -30)."""
    params = unfreeze(variables)["params"]
    router = params["router"]
    bias = jnp.zeros((memories,)).at[never].set(-30.0)
    router["kernel"] = nn.Partitioned(jnp.zeros_like(router["kernel"].value), router["kernel"].names)
    router["bias"] = nn.Partitioned(bias, router["bias"].names)
    return {"params": params}


@pytest.mark.parametrize("memory", MEMORIES)
def test_unchosen_memories_are_left_bit_for_bit(memory):
    """Token by token (``step``), every memory the router did not choose keeps its state exactly and
    every chosen one moves; over a whole sequence (the chunked op), a memory never chosen ends
    exactly where it started."""
    layer = MixtureOfMemories(num_heads=2, head_dim=4, num_memories=4, top_k=2, memory=memory, chunk_size=4)
    x = inputs(length=9)
    variables = layer.init(jax.random.key(2), x)
    state = jax.random.normal(jax.random.key(3), layer.init_carry(2).state.shape)
    carry = layer.init_carry(2)._replace(state=state)
    step = jax.jit(lambda carry, x_t: layer.apply(variables, carry, x_t, method=layer.step))
    for t in range(3):
        _, chosen, _ = top_k_routing(router_logits(variables, x[:, t]), 2)
        chosen = jnp.concatenate([chosen, jnp.ones_like(chosen[:, :1])], axis=-1)  # [B, M + shared]
        new_carry, _ = step(carry, x[:, t])
        before, after = (s.reshape(2, 5, 2, 4, 4) for s in (carry.state, new_carry.state))
        for b in range(2):
            for m in range(5):
                same = bool(jnp.array_equal(before[b, m], after[b, m]))
                assert same == (float(chosen[b, m]) == 0.0), (t, b, m)
        carry = new_carry

    forced = forced_router(variables, never=1, memories=4)
    _, final = layer.apply(forced, x, carry=layer.init_carry(2)._replace(state=state), impl="xla", method=layer._mix)
    final, start = final.state.reshape(2, 5, 2, 4, 4), state.reshape(2, 5, 2, 4, 4)
    assert bool(jnp.array_equal(final[:, 1], start[:, 1]))
    assert not bool(jnp.array_equal(final[:, 0], start[:, 0]))


def test_top_k_routing_keeps_k_and_renormalises():
    logits = jax.random.normal(jax.random.key(4), (3, 7, 5))
    weights, chosen, probabilities = top_k_routing(logits, 2)
    np.testing.assert_allclose(probabilities, jax.nn.softmax(logits, -1), rtol=1e-6)
    np.testing.assert_array_equal(jnp.sum(chosen, -1), 2.0)
    top_two = np.argsort(-np.asarray(logits), axis=-1)[..., :2]
    expected = np.zeros_like(np.asarray(chosen))
    np.put_along_axis(expected, top_two, 1.0, axis=-1)
    np.testing.assert_array_equal(chosen, expected)
    kept = np.asarray(probabilities) * expected
    np.testing.assert_allclose(weights, kept / kept.sum(-1, keepdims=True), rtol=1e-6)


def test_load_balancing_loss_is_switch_transformers():
    """``M sum_m f_m P_m``: 1 for a uniform router, M when every token goes to one memory with
    certainty, and an explicit sum for a random routing."""
    memories, k = 4, 2
    uniform = jnp.full((10, memories), 1.0 / memories)
    chosen = jnp.tile(jnp.array([1.0, 1.0, 0.0, 0.0]), (10, 1)).at[5:].set(jnp.array([0.0, 0.0, 1.0, 1.0]))
    np.testing.assert_allclose(load_balancing_loss(chosen, uniform, k), 1.0, rtol=1e-6)
    certain = jnp.zeros((10, memories)).at[:, 0].set(1.0)
    np.testing.assert_allclose(load_balancing_loss(certain, certain, 1), memories, rtol=1e-6)
    _, chosen, probabilities = top_k_routing(jax.random.normal(jax.random.key(5), (2, 6, memories)), k)
    c, p = np.asarray(chosen).reshape(-1, memories), np.asarray(probabilities).reshape(-1, memories)
    expected = memories * sum((c[:, m].mean() / k) * p[:, m].mean() for m in range(memories))
    np.testing.assert_allclose(load_balancing_loss(chosen, probabilities, k), expected, rtol=1e-6)


def test_call_sows_the_balance_loss_and_the_router_learns():
    layer = MixtureOfMemories(num_heads=2, head_dim=4, num_memories=3, top_k=2, chunk_size=4)
    x = inputs()
    variables = layer.init(jax.random.key(6), x)
    assert set(variables) == {"params"}  # init sows nothing: a later apply's collection starts empty
    y, sown = layer.apply(variables, x, mutable=[AUX_LOSS_COLLECTION])
    (aux,) = sown[AUX_LOSS_COLLECTION]["load_balance"]
    _, chosen, probabilities = top_k_routing(router_logits(variables, x), 2)
    np.testing.assert_allclose(aux, load_balancing_loss(chosen, probabilities, 2), rtol=1e-6)
    assert layer.apply(variables, x).shape == y.shape  # without the collection mutable: no loss, same output

    def output_loss(params):  # the output alone (no balance loss) reaches the router through r_t
        return jnp.sum(jnp.sin(layer.apply({"params": params}, x)))

    grads = jax.grad(output_loss)(variables["params"])
    assert float(jnp.max(jnp.abs(nn.unbox(grads["router"])["kernel"]))) > 1e-6


@pytest.mark.parametrize("memory", MEMORIES)
def test_step_equals_call_at_odd_sizes(memory):
    layer = MixtureOfMemories(num_heads=2, head_dim=4, value_dim=3, num_memories=3, top_k=2, memory=memory, chunk_size=4,
                              negative_eigenvalues=True)
    x = inputs(length=13)
    variables = layer.init(jax.random.key(7), x)
    want = layer.apply(variables, x)
    step = jax.jit(lambda carry, x_t: layer.apply(variables, carry, x_t, method=layer.step))
    carry, got = layer.init_carry(2, WIDTH), []
    for t in range(x.shape[1]):
        carry, y_t = step(carry, x[:, t])
        got.append(y_t)
    np.testing.assert_allclose(jnp.stack(got, axis=1), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(memory="lstm"), "memory='lstm' is not one of"),
    (dict(num_memories=0), "num_memories must be an int >= 1"),
    (dict(num_memories=2, top_k=3), r"top_k must be an int in \[1, num_memories = 2\]"),
    (dict(short_conv=-1), "short_conv must be >= 0"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MixtureOfMemories(num_heads=2, head_dim=4, **options).init(jax.random.key(0), inputs())

"""LASP-2 for the delta rule on 8 fake CPU devices: equal to one device (forward and every gradient,
gates, DeltaProduct steps, packed segments across shard edges), one all-gather whose size does not
depend on T, and the DeltaNet and Mixture-of-Memories mixers switching to it under a sequence mesh."""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from test_sequence_parallel import (
    assert_close,
    assert_layer_under_a_sequence_mesh_equals_one_device,
    make_mesh,
    normal,
    only_all_gathers,
    two_packed_rows,
    weighted_sum,
)

from jaxattn.nn import DeltaNet, MixtureOfMemories
from jaxattn.ops import delta_rule
from jaxattn.parallel.mesh import SEQUENCE_AXIS
from jaxattn.parallel.sequence import sequence_parallel_delta_rule

BATCH, LENGTH, HEADS, KEY_DIM, VALUE_DIM = 2, 32, 2, 4, 3


def delta_inputs(steps):
    q = normal(0, (BATCH, LENGTH, HEADS, KEY_DIM))
    k = normal(1, (BATCH, LENGTH * steps, HEADS, KEY_DIM))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = normal(2, (BATCH, LENGTH * steps, HEADS, VALUE_DIM))
    beta = 2.0 * jax.nn.sigmoid(normal(3, (BATCH, LENGTH * steps, HEADS)))
    g = jax.nn.log_sigmoid(normal(4, (BATCH, LENGTH, HEADS)) + 2.0)
    return q, k, v, beta, g


# (householder_steps, gated, segments): segment edges on a shard edge (token 12 of 4-token shards)
# and inside one (token 19), and a sequence that continues across every edge.
CASES = [(1, False, False), (2, True, True), (3, True, False)]


@pytest.mark.parametrize("steps, gated, segments", CASES)
def test_delta_rule_equals_one_device(steps, gated, segments):
    mesh = make_mesh()
    q, k, v, beta, g = delta_inputs(steps)
    segment_ids = (jnp.arange(LENGTH)[None] >= jnp.array([[12], [19]])).astype(int) if segments else None
    options = dict(householder_steps=steps, segment_ids=segment_ids, chunk_size=4)

    def single(q, k, v, beta, g):
        return weighted_sum(delta_rule(q, k, v, beta, g=g if gated else None, impl="xla", **options))

    def sharded(q, k, v, beta, g):
        return weighted_sum(sequence_parallel_delta_rule(q, k, v, beta, g=g if gated else None, mesh=mesh, **options))

    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2, 3, 4))
    want = jax.jit(grad(single))(q, k, v, beta, g)
    got = jax.jit(grad(sharded))(q, k, v, beta, g)
    for g_, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(g_, w, rtol=5e-5)


def test_pallas_kernels_as_the_local_work_equal_one_device():
    """The Pallas kernels (interpreter on CPU) inside each of 2 shards, gated DeltaProduct."""
    mesh = make_mesh((2,))
    q, k, v, beta, g = delta_inputs(2)
    options = dict(householder_steps=2, chunk_size=16)

    def single(q, k, v, beta, g):
        return weighted_sum(delta_rule(q, k, v, beta, g=g, impl="reference", **options))

    def sharded(q, k, v, beta, g):
        return weighted_sum(sequence_parallel_delta_rule(q, k, v, beta, g=g, mesh=mesh, impl="pallas", **options))

    grad = functools.partial(jax.value_and_grad, argnums=(0, 1, 2, 3, 4))
    want = jax.jit(grad(single))(q, k, v, beta, g)
    got = jax.jit(grad(sharded))(q, k, v, beta, g)
    for g_, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(g_, w, rtol=5e-5)


def compiled_delta_rule(length, backward=False):
    mesh = make_mesh()
    along_sequence = NamedSharding(mesh, PartitionSpec(None, SEQUENCE_AXIS))
    token = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32, sharding=along_sequence)
    gate = jax.ShapeDtypeStruct((1, length, 2), jnp.float32, sharding=along_sequence)

    def layer(q, k, v, beta, g):
        return sequence_parallel_delta_rule(q, k, v, beta, g=g, mesh=mesh)

    fn = jax.grad(lambda *a: jnp.sum(layer(*a)), argnums=(0, 1, 2, 3, 4)) if backward else layer
    return jax.jit(fn).lower(token, token, token, gate, gate).compile().as_text()


def test_forward_has_one_all_gather_independent_of_length():
    shapes = [only_all_gathers(compiled_delta_rule(length), 1)[0] for length in (512, 4096)]
    # [shards, B, H K V + H K K]: every shard's state and transition matrix, whatever T is.
    assert shapes[0] == shapes[1] == "f32[8,1,1024]"


def test_backward_adds_one_all_gather_and_nothing_else():
    only_all_gathers(compiled_delta_rule(256, backward=True), 2)  # forward states, backward cotangents


@pytest.mark.parametrize("options", [dict(gated=True, output_gate=True),
                                     dict(householder_steps=2, negative_eigenvalues=True)], ids=["gated", "product"])
def test_delta_net_under_a_sequence_mesh_equals_one_device(options):
    layer = DeltaNet(num_heads=2, head_dim=4, chunk_size=4, **options)
    assert_layer_under_a_sequence_mesh_equals_one_device(layer, two_packed_rows())


@pytest.mark.parametrize("memory", ["gated_delta_rule", "gated_linear_attention"])
def test_mixture_of_memories_under_a_sequence_mesh_equals_one_device(memory):
    """Every memory (routed and shared) is a head of one op call, so the op's LASP-2 carries them all."""
    layer = MixtureOfMemories(num_heads=2, head_dim=4, num_memories=3, top_k=2, memory=memory, chunk_size=4)
    assert_layer_under_a_sequence_mesh_equals_one_device(layer, two_packed_rows())


def test_errors_name_the_argument():
    mesh = make_mesh()
    q = jnp.zeros((2, 12, 2, 4))
    with pytest.raises(ValueError, match="not divisible by the 8 shards"):
        sequence_parallel_delta_rule(q, q, q, jnp.zeros((2, 12, 2)), mesh=mesh)
    with pytest.raises(ValueError, match="`beta`"):
        sequence_parallel_delta_rule(q, q, q, jnp.zeros((2, 12)), mesh=mesh)

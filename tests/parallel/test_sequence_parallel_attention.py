"""LASP-2H's softmax attention on 8 fake CPU devices: each sequence shard attends its queries to the
gathered K and V, equal to one device forward and backward, with ONE all-gather of K and V packed
(and one of the segment ids) in the forward pass and their transpose, a reduce-scatter, in the backward."""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxattn.nn import MultiHeadAttention
from jaxattn.ops import softmax_attention
from jaxattn.parallel import SEQUENCE_AXIS, communication
from jaxattn.parallel.sequence import sequence_axis_size, sequence_parallel_softmax_attention

B, T, D, DV = 2, 32, 6, 6  # 4 tokens a shard on 8 shards (the xla path needs Dv == D)

# Segments start on and off shard edges (4 and 8 tokens a shard) and span several shards.
SEGMENTS = jnp.array([[0] * 6 + [1] * 13 + [2] * 13, [5] * 8 + [3] * 3 + [5] * 21])

MESHES = {
    "sequence8": ((8,), (SEQUENCE_AXIS,)),
    "data2_sequence4": ((2, 4), ("data", SEQUENCE_AXIS)),
    "data2_sequence2_tensor2": ((2, 2, 2), ("data", SEQUENCE_AXIS, "tensor")),
}

CASES = {
    "causal_segments": dict(causal=True, segment_ids=SEGMENTS),
    "causal": dict(causal=True),
    "bidirectional": dict(causal=False),
    "bidirectional_segments": dict(causal=False, segment_ids=SEGMENTS),
}


def make_mesh(name):
    shape, names = MESHES[name]
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def attention_inputs(heads):
    keys = jax.random.split(jax.random.key(0), 3)
    return (jax.random.normal(keys[0], (B, T, heads, D)), jax.random.normal(keys[1], (B, T, heads, D)),
            jax.random.normal(keys[2], (B, T, heads, DV)))


def weighted_sum(out):
    """A loss that weighs every output differently, so each gradient entry is checked."""
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
    return jnp.sum(weights * out)


def assert_close(got, want, tol=2e-5):
    scale = float(jnp.max(jnp.abs(want)))
    error = float(jnp.max(jnp.abs(got - want)))
    assert error <= tol * max(scale, 1.0), (error, scale)


@pytest.mark.parametrize("mesh_name", MESHES)
@pytest.mark.parametrize("case", CASES)
def test_equals_one_device(case, mesh_name):
    """Forward and gradients of q, k, v against the reference op on the whole sequence; heads 4
    divide the tensor axis, heads 3 stay replicated over it."""
    mesh = make_mesh(mesh_name)
    for heads in (4, 3) if "tensor" in mesh_name else (3,):
        inputs = attention_inputs(heads)
        single = functools.partial(softmax_attention, impl="reference", **CASES[case])
        sharded = functools.partial(sequence_parallel_softmax_attention, mesh=mesh, **CASES[case])
        assert_close(jax.jit(sharded)(*inputs), single(*inputs))
        want = jax.grad(lambda *a: weighted_sum(single(*a)), argnums=(0, 1, 2))(*inputs)
        got = jax.jit(jax.grad(lambda *a: weighted_sum(sharded(*a)), argnums=(0, 1, 2)))(*inputs)
        for name, g, w in zip("qkv", got, want):
            assert g.shape == w.shape, name
            assert_close(g, w)


def compiled_collectives(segments: bool, backward: bool) -> list[communication.Collective]:
    mesh = make_mesh("sequence8")
    sharded = NamedSharding(mesh, PartitionSpec(None, SEQUENCE_AXIS))
    q = jax.ShapeDtypeStruct((B, T, 3, D), jnp.float32, sharding=sharded)
    v = jax.ShapeDtypeStruct((B, T, 3, DV), jnp.float32, sharding=sharded)
    ids = jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=sharded)

    def layer(q, k, v, segment_ids):
        return sequence_parallel_softmax_attention(q, k, v, segment_ids=segment_ids if segments else None, mesh=mesh)

    fn = jax.grad(lambda *a: jnp.sum(layer(*a)), argnums=(0, 1, 2)) if backward else layer
    return communication.collectives(jax.jit(fn).lower(q, q, v, ids).compile().as_text(), mesh.size)


PACKED_KV = f"f32[{B},{T},3,{D + DV}]"  # [B, T, H, D + Dv]: K and V of every shard, one collective


@pytest.mark.parametrize("segments", [True, False])
def test_forward_gathers_keys_and_values_once(segments):
    found = sorted((c.kind, c.shape, c.group_size) for c in compiled_collectives(segments, backward=False))
    want = [("all-gather", PACKED_KV, 8)] + ([("all-gather", f"s32[{B},{T}]", 8)] if segments else [])
    assert found == sorted(want)


def test_backward_reduce_scatters_the_key_and_value_gradients():
    found = [(c.kind, c.shape) for c in compiled_collectives(segments=False, backward=True)]
    assert found.count(("all-gather", PACKED_KV)) == 1, found
    assert found.count(("reduce-scatter", f"f32[{B},{T // 8},3,{D + DV}]")) == 1, found
    assert len(found) == 2, found


# ----------------------------------------------------------------------------- the layer


LAYERS = {
    "causal": dict(),
    "bidirectional_short_conv": dict(causal=False, short_conv=3),
}


@pytest.mark.parametrize("options", LAYERS)
def test_layer_under_a_sequence_mesh_equals_one_device(options):
    """``MultiHeadAttention`` (rotary positions of the whole sequence) switches to LASP-2H under a
    (data 2, sequence 4) mesh: loss and gradients of every parameter and of the input unchanged."""
    layer = MultiHeadAttention(num_heads=2, head_dim=8, **LAYERS[options])
    x = jax.random.normal(jax.random.key(1), (B, T, 12))
    params = jax.jit(functools.partial(layer.init, segment_ids=SEGMENTS))(jax.random.key(0), x)

    def loss(params, x):
        return weighted_sum(layer.apply(params, x, segment_ids=SEGMENTS))

    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    with jax.set_mesh(make_mesh("data2_sequence4")):
        assert sequence_axis_size() == 4
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, x).compile()
        got = compiled(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(g, w, tol=5e-5)
    gathers = [c.shape for c in communication.collectives(compiled.as_text()) if c.kind == "all-gather"]
    assert f"f32[1,{T},2,16]" in gathers, gathers  # K and V of the whole sequence, this device's batch row


def test_errors():
    mesh = make_mesh("sequence8")
    q = jnp.zeros((2, 12, 2, 4))
    with pytest.raises(ValueError, match="not divisible by the 8 shards"):
        sequence_parallel_softmax_attention(q, q, q, mesh=mesh)
    with pytest.raises(ValueError, match="needs a mesh with a 'sequence' axis"):
        sequence_parallel_softmax_attention(q, q, q)
    with pytest.raises(ValueError, match=r"q, k \[B, T, H, K\] and v \[B, T, H, V\] must agree"):
        sequence_parallel_softmax_attention(q, q[:, :8], q, mesh=mesh)
    with pytest.raises(ValueError, match=r"`segment_ids` must be \[B, T\]"):
        sequence_parallel_softmax_attention(q, q, q, segment_ids=jnp.zeros((2, 8), int), mesh=mesh)
    q = jnp.zeros((2, 16, 2, 4))
    with pytest.raises(ValueError, match="impl='pallas' does not support query_offset"):
        sequence_parallel_softmax_attention(q, q, q, impl="pallas", mesh=mesh)

"""LASP-2 sequence parallelism on 8 fake CPU devices: equal to one device forward and backward,
and one all-gather of a size independent of T in the forward pass."""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxattn.nn import S4D, S5, LinearAttention
from jaxattn.ops import diagonal_scan, linear_attention
from jaxattn.parallel import SEQUENCE_AXIS, communication
from jaxattn.parallel.sequence import (
    sequence_axis_size,
    sequence_parallel_diagonal_scan,
    sequence_parallel_linear_attention,
)

B, T, H, K, V = 2, 88, 3, 5, 6  # 11 tokens per shard: not a multiple of the chunk size 8


def make_mesh(shape=(8,), names=(SEQUENCE_AXIS,)):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def weighted_sum(out):
    """A loss that weighs every output differently, so each gradient entry is checked."""
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
    return jnp.sum(weights * out).real


def assert_close(got, want, rtol=2e-5):
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got - want))) <= rtol * max(scale, 1.0), (float(jnp.max(jnp.abs(got - want))), scale)


def attention_inputs(positive=False):
    q, k = normal(0, (B, T, H, K)), normal(1, (B, T, H, K))
    if positive:
        q, k = jax.nn.elu(q) + 1, jax.nn.elu(k) + 1
    gates = -jax.nn.softplus(normal(3, (B, T, H)))
    return q, k, normal(2, (B, T, H, V)), gates


SEGMENTS = jnp.array([[0] * 20 + [1] * 31 + [2] * 37, [0] * 11 + [1] * 44 + [2] * 33])  # starts on and off shard edges

ATTENTION_CASES = {
    "plain": dict(),
    "decayed": dict(g_gamma=jnp.log(jnp.array([0.9, 0.7, 0.99]))),
    "gated": dict(gated=True),
    "gated_normalized": dict(gated=True, normalize=True, positive=True),
    "gated_segments": dict(gated=True, segment_ids=SEGMENTS),
    "noncausal": dict(causal=False),
}


def _attention_functions(case, mesh, impl="xla", chunk_size=8):
    options = dict(ATTENTION_CASES[case])
    options.pop("positive", None)
    gated = options.pop("gated", False)

    def single(q, k, v, g):
        return linear_attention(q, k, v, g=g if gated else None, chunk_size=8, impl="reference", **options)

    def sharded(q, k, v, g):
        return sequence_parallel_linear_attention(q, k, v, g=g if gated else None, chunk_size=chunk_size, impl=impl,
                                                  mesh=mesh, **options)

    return single, sharded


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_linear_attention_equals_one_device(case):
    mesh = make_mesh()
    inputs = attention_inputs(ATTENTION_CASES[case].get("positive", False))
    single, sharded = _attention_functions(case, mesh)
    assert_close(jax.jit(sharded)(*inputs), single(*inputs))
    want = jax.grad(lambda *a: weighted_sum(single(*a)), argnums=(0, 1, 2, 3))(*inputs)
    got = jax.jit(jax.grad(lambda *a: weighted_sum(sharded(*a)), argnums=(0, 1, 2, 3)))(*inputs)
    for name, g, w in zip("qkvg", got, want):
        assert_close(g, w), name


def test_linear_attention_pallas_path_equals_one_device():
    """The Pallas kernels (interpreter on CPU) as the local attention of each shard."""
    mesh = make_mesh((2,))
    inputs = [a[:, :40] for a in attention_inputs()]  # 20 tokens a shard, chunks of 16
    single, sharded = _attention_functions("gated", mesh, impl="pallas", chunk_size=16)
    assert_close(jax.jit(sharded)(*inputs), single(*inputs))
    want = jax.grad(lambda *a: weighted_sum(single(*a)), argnums=(0, 1, 2, 3))(*inputs)
    got = jax.jit(jax.grad(lambda *a: weighted_sum(sharded(*a)), argnums=(0, 1, 2, 3)))(*inputs)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_linear_attention_on_a_mixed_mesh():
    """Batch over data, sequence over sequence, heads over tensor where they divide (4 do, 3 not)."""
    mesh = make_mesh((2, 2, 2), ("data", SEQUENCE_AXIS, "tensor"))
    for heads in (3, 4):
        q, k, v, g = (jnp.concatenate([a, a[:, :, :1]], axis=2)[:, :, :heads] for a in attention_inputs())
        single = lambda q, k, v, g: linear_attention(q, k, v, g=g, impl="reference")  # noqa: E731
        sharded = lambda q, k, v, g: sequence_parallel_linear_attention(q, k, v, g=g, chunk_size=8, mesh=mesh)  # noqa: E731
        want = jax.grad(lambda *a: weighted_sum(single(*a)), argnums=(0, 1, 2, 3))(q, k, v, g)
        got = jax.jit(jax.grad(lambda *a: weighted_sum(sharded(*a)), argnums=(0, 1, 2, 3)))(q, k, v, g)
        for a, b in zip(got, want):
            assert_close(a, b)


def scan_inputs(dtype):
    magnitude = 0.98 * jax.nn.sigmoid(normal(4, (B, T, 7)))
    if dtype == jnp.complex64:
        a = magnitude * jnp.exp(1j * normal(5, (B, T, 7)))
        return a.astype(dtype), (normal(6, (B, T, 7)) + 1j * normal(7, (B, T, 7))).astype(dtype)
    return magnitude, normal(6, (B, T, 7))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_diagonal_scan_equals_one_device(dtype, reverse, impl):
    mesh = make_mesh()
    a, b = scan_inputs(dtype)
    if impl == "pallas":
        a, b = a[:, :24], b[:, :24]
    single = lambda a, b: diagonal_scan(a, b, reverse=reverse, impl="reference")[0]  # noqa: E731
    sharded = lambda a, b: sequence_parallel_diagonal_scan(a, b, reverse=reverse, impl=impl, mesh=mesh)  # noqa: E731
    assert_close(jax.jit(sharded)(a, b), single(a, b))
    want = jax.grad(lambda *x: weighted_sum(single(*x)), argnums=(0, 1))(a, b)
    got = jax.jit(jax.grad(lambda *x: weighted_sum(sharded(*x)), argnums=(0, 1)))(a, b)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_diagonal_scan_with_broadcast_transitions_and_resets():
    """S5's layout: one transition for every step and sequence ``[1, 1, P]``, and resets (a = 0)."""
    mesh = make_mesh((2, 4), ("data", SEQUENCE_AXIS))
    shared = (0.9 * jnp.exp(1j * jnp.arange(7.0))).reshape(1, 1, 7).astype(jnp.complex64)
    _, b = scan_inputs(jnp.complex64)
    reset = jnp.where((jnp.arange(T) % 13 == 0)[None, :, None], 0.0, 1.0)
    for a in (shared, shared * reset):
        single = lambda a, b: diagonal_scan(a, b, impl="reference")[0]  # noqa: E731
        sharded = lambda a, b: sequence_parallel_diagonal_scan(a, b, mesh=mesh)  # noqa: E731
        want = jax.grad(lambda *x: weighted_sum(single(*x)), argnums=(0, 1))(a, b)
        got = jax.jit(jax.grad(lambda *x: weighted_sum(sharded(*x)), argnums=(0, 1)))(a, b)
        for g, w in zip(got, want):
            assert_close(g, w)


def collectives(compiled_text: str) -> dict[str, list[str]]:
    """Result shapes of every collective in compiled HLO text, by kind."""
    found = {kind: [] for kind in communication.KINDS}
    for collective in communication.collectives(compiled_text):
        found[collective.kind].append(collective.shape)
    return found


def only_all_gathers(compiled_text: str, count: int) -> list[str]:
    """The result shapes of the all-gathers in compiled HLO text, after checking that there are
    ``count`` of them and no other collective."""
    found = collectives(compiled_text)
    assert len(found["all-gather"]) == count, found
    assert not any(found[kind] for kind in found if kind != "all-gather"), found
    return found["all-gather"]


def compiled_layer(length, backward=False, gated=True):
    mesh = make_mesh()
    token = jax.ShapeDtypeStruct((2, length, 4, 16), jnp.float32,
                                 sharding=NamedSharding(mesh, PartitionSpec(None, SEQUENCE_AXIS)))
    gate = jax.ShapeDtypeStruct((2, length, 4), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec(None, SEQUENCE_AXIS)))

    def layer(q, k, v, g):
        return sequence_parallel_linear_attention(q, k, v, g=g if gated else None, mesh=mesh)

    fn = jax.grad(lambda *a: jnp.sum(layer(*a)), argnums=(0, 1, 2, 3)) if backward else layer
    return jax.jit(fn).lower(token, token, token, gate).compile().as_text()


def test_forward_has_one_all_gather_independent_of_length():
    shapes = [only_all_gathers(compiled_layer(length), 1)[0] for length in (256, 2048)]
    # [shards, B, H K V + H]: the states and the decays of every shard, whatever T is.
    assert shapes[0] == shapes[1] == "f32[8,2,1028]"


def test_backward_adds_one_all_gather_and_nothing_else():
    only_all_gathers(compiled_layer(512, backward=True), 2)  # forward states, backward cotangents


# ----------------------------------------------------------------------------- layers


LAYERS = {
    "linear_attention_gated": lambda: LinearAttention(num_heads=2, head_dim=4, gate="data", chunk_size=4),
    "linear_attention_noncausal": lambda: LinearAttention(num_heads=2, head_dim=4, causal=False),
    "s5_bidirectional": lambda: S5(state_size=4, blocks=2, causal=False),
    "s4d_recurrence_bidirectional": lambda: S4D(state_size=4, mode="recurrence", causal=False),
}


def assert_layer_under_a_sequence_mesh_equals_one_device(layer, segment_ids):
    """Loss and gradients (parameters and input) of ``layer`` on ``x [2, 32, 8]`` under a
    (data 2, sequence 4) mesh equal those on one device, and the sharded program gathers shard states."""
    x = normal(8, (2, 32, 8))
    params = jax.jit(functools.partial(layer.init, segment_ids=segment_ids))(jax.random.key(0), x)

    def loss(params, x):
        return weighted_sum(layer.apply(params, x, segment_ids=segment_ids))

    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    with jax.set_mesh(make_mesh((2, 4), ("data", SEQUENCE_AXIS))):
        assert sequence_axis_size() == 4
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, x).compile()
        got = compiled(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(g, w, rtol=5e-5)
    assert collectives(compiled.as_text())["all-gather"], "the sharded layer should gather shard states"


def two_packed_rows():
    """Segment ids ``[2, 32]``: the first row one segment, the second 19 tokens of
    segment 1 then 13 of segment 0."""
    return (jnp.arange(32) < jnp.array([[32], [19]])).astype(int)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_under_a_sequence_mesh_equal_one_device(name):
    """The mixers switch to LASP-2 by themselves inside ``jax.set_mesh`` with sequence shards."""
    segment_ids = None if name == "linear_attention_noncausal" else two_packed_rows()
    assert_layer_under_a_sequence_mesh_equals_one_device(LAYERS[name](), segment_ids)


def test_errors():
    mesh = make_mesh()
    q = jnp.zeros((2, 12, 2, 4))
    with pytest.raises(ValueError, match="not divisible by the 8 shards"):
        sequence_parallel_linear_attention(q, q, q, mesh=mesh)
    with pytest.raises(ValueError, match="needs a mesh with a 'sequence' axis"):
        sequence_parallel_diagonal_scan(q, q)
    with pytest.raises(ValueError, match="segment_ids need causal=True"):
        sequence_parallel_linear_attention(q, q, q, causal=False, segment_ids=jnp.zeros((2, 12), int), mesh=mesh)
    assert sequence_axis_size() == 1


def test_communication_accounting():
    """Bytes a device receives, from HLO text: ring all-gather (G-1)/G of the result, all-reduce twice that."""
    text = "\n".join([
        "  %all-gather.1 = f32[8,2,1028]{2,1,0} all-gather(f32[1,2,1028]{2,1,0} %x), replica_groups={{0,1,2,3,4,5,6,7}}",
        "  %ar = bf16[4,16]{1,0} all-reduce(bf16[4,16]{1,0} %y), replica_groups=[2,4]<=[8], to_apply=%sum",
        "  %cp = s32[2]{0} collective-permute(s32[2]{0} %z), source_target_pairs={{0,1},{1,2}}",
        "  %ags = (f32[1,4]{1,0}, f32[4,4]{1,0}) all-gather-start(f32[1,4]{1,0} %w), replica_groups={{0,1,2,3}}",
        "  %agd = f32[4,4]{1,0} all-gather-done((f32[1,4]{1,0}, f32[4,4]{1,0}) %ags)",
    ])
    found = communication.collectives(text)
    assert [(c.kind, c.shape, c.result_bytes, c.group_size) for c in found] == [
        ("all-gather", "f32[8,2,1028]", 8 * 2 * 1028 * 4, 8),
        ("all-reduce", "bf16[4,16]", 128, 4),
        ("collective-permute", "s32[2]", 8, 1),
        ("all-gather", "f32[4,4]", 64, 4),
    ]
    want = 8 * 2 * 1028 * 4 * 7 / 8 + 2 * 128 * 3 / 4 + 8 + 64 * 3 / 4
    assert communication.bytes_received_per_device(text) == pytest.approx(want)

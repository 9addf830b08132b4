"""Mesh presets on 8 fake CPU devices: one train step equals the one-device step, and parameters,
Adam moments and batches are laid out as the logical axis rules say."""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import meta
from jax.sharding import PartitionSpec

from jaxattn.models import SequenceClassifier
from jaxattn.nn.registry import MIXERS
from jaxattn.parallel import (
    LOGICAL_AXIS_RULES, MESH_AXES, MESH_PRESETS, batch_spec, device_put_batch, fit_spec, logical_shardings, make_mesh,
    resolve_mesh_sizes,
)
from jaxattn.train import default_config, validate_config
from jaxattn.train.config import mesh_sizes
from jaxattn.train.loop import _check_batch_layout
from jaxattn.train.optimizer import make_optimizer
from jaxattn.train.steps import create_state, make_train_step

# S5's state_size 16 gives P = 8 modes (conjugate symmetry keeps half).
D_MODEL, MODES, HEADS, HEAD_DIM, BATCH, LENGTH = 16, 8, 2, 8, 8, 16
MIXER_OPTIONS = {
    "s5": dict(state_size=2 * MODES, blocks=1),
    "linear_attention": dict(num_heads=HEADS, head_dim=HEAD_DIM, gate="data", chunk_size=8),
}


# A hybrid stack: Mixture-of-Memories (gated delta rule memories), then softmax attention (LASP-2H
# under a sequence mesh).
HYBRID_PATTERN = (
    ("mom", dict(num_heads=HEADS, head_dim=HEAD_DIM, num_memories=2, top_k=1, chunk_size=8)),
    ("softmax_attention", dict(num_heads=HEADS, head_dim=HEAD_DIM)),
)


def make_model(mixer, d_model=D_MODEL, **options):
    if mixer == "hybrid":
        return SequenceClassifier(num_classes=4, d_model=d_model, num_layers=2, mixer_pattern=HYBRID_PATTERN)
    return SequenceClassifier(
        num_classes=4, d_model=d_model, num_layers=1, mixer=mixer,
        mixer_options={**MIXER_OPTIONS[mixer], **options},
    )


def make_batch():
    rng = np.random.default_rng(0)
    return {
        "inputs": rng.normal(size=(BATCH, LENGTH, 1)).astype(np.float32),
        "targets": rng.integers(0, 4, BATCH).astype(np.int32),
        "lengths": rng.integers(LENGTH // 2, LENGTH + 1, BATCH).astype(np.int32),
    }


def one_step(model, mesh):
    tx = make_optimizer(lr=1e-2, ssm_lr=5e-3, weight_decay=0.05, warmup_steps=1, total_steps=4)
    state, shardings = create_state(model, tx, make_batch(), jax.random.key(0), mesh)
    batch = device_put_batch(make_batch(), mesh)
    state, metrics = make_train_step(model, tx, shardings, mesh)(state, batch, jax.random.key(1))
    return state, float(metrics["loss"]), batch


@functools.lru_cache(maxsize=None)
def one_device(mixer):
    state, loss, _ = one_step(make_model(mixer), make_mesh(data=1, devices=jax.devices()[:1]))
    return loss, jax.device_get(state.params)


def moment_pairs(state):
    """(Adam moment, its parameter) for every ``mu`` and ``nu`` of every optimiser group."""
    pairs = []
    for key in ("mu", "nu"):
        for _, moments in optax.tree_utils.tree_get_all_with_path(state.opt_state, key):
            jax.tree.map(
                lambda m, p: pairs.append((m, p)) if not isinstance(m, optax.MaskedNode) else None,
                moments, state.params, is_leaf=lambda x: isinstance(x, optax.MaskedNode),
            )
    return pairs


# Each case compiles two programs (about 5 s of CPU): every named preset, two mixed layouts, the
# causal gated linear attention (LASP-2 with the classifier's padding segments) where it shards, and
# a hybrid stack under every preset.
CASES = [
    *(("s5", name, resolve_mesh_sizes(name)) for name in MESH_PRESETS),
    ("s5", "data2_fsdp2_sequence2", resolve_mesh_sizes(data=2, fsdp=2, sequence=2)),
    ("s5", "fsdp2_sequence2_tensor2", resolve_mesh_sizes(data=1, fsdp=2, sequence=2, tensor=2)),
    ("linear_attention", "sequence", resolve_mesh_sizes("sequence")),
    ("linear_attention", "data2_tensor4", resolve_mesh_sizes(data=2, tensor=4)),
    ("linear_attention", "fsdp2_sequence2_tensor2", resolve_mesh_sizes(data=1, fsdp=2, sequence=2, tensor=2)),
    *(("hybrid", name, resolve_mesh_sizes(name)) for name in MESH_PRESETS),
]


@pytest.mark.parametrize("mixer, layout, sizes", CASES, ids=[f"{m}-{n}" for m, n, _ in CASES])
def test_train_step_equals_one_device_and_follows_rules(mixer, layout, sizes):
    assert jax.device_count() == 8, "tests run with 8 fake CPU devices (tests/conftest.py)"
    mesh = make_mesh(**sizes)
    assert mesh.axis_names == MESH_AXES and mesh.size == 8
    shape = dict(mesh.shape)
    state, loss, batch = one_step(make_model(mixer), mesh)

    reference_loss, reference_params = one_device(mixer)
    # Same math in another reduction order: float32 rounding only (Adam's first step is about
    # lr * sign(g), so a parameter differs only where rounding moved g itself).
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(reference_params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # Parameters: embed over fsdp, heads / mlp / ssm_state over tensor, classes replicated.
    fsdp, tensor = shape["fsdp"], shape["tensor"]
    params = state.params
    block = params["blocks_0"]

    def shard(leaf):
        return leaf.sharding.shard_shape(leaf.shape)

    assert shard(block["gate"]["kernel"]) == (D_MODEL // fsdp, D_MODEL // tensor)  # [embed, mlp]
    assert shard(block["norm"]["scale"]) == (D_MODEL // fsdp,)
    assert shard(params["decoder"]["kernel"]) == (D_MODEL // fsdp, 4)  # [embed, classes]
    if mixer == "s5":
        assert shard(block["mixer"]["B"]) == (MODES // tensor, D_MODEL // fsdp, 2)  # [ssm_state, embed, 2]
        assert shard(block["mixer"]["C"]) == (D_MODEL // fsdp, MODES // tensor, 2)  # [embed, ssm_state, 2]
    else:
        width = HEADS * HEAD_DIM
        assert shard(block["mixer"]["query"]["kernel"]) == (D_MODEL // fsdp, width // tensor)  # [embed, heads]
        assert shard(block["mixer"]["out"]["kernel"]) == (width // tensor, D_MODEL // fsdp)  # [heads, embed]
    if fsdp == tensor == 1:
        assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))

    # Adam moments share their parameter's sharding.
    pairs = moment_pairs(state)
    assert len(pairs) == 2 * len(jax.tree.leaves(params))
    for moment, param in pairs:
        assert moment.sharding == param.sharding

    # Batch: rows over data x fsdp, positions over sequence.
    rows = BATCH // (shape["data"] * shape["fsdp"])
    assert shard(batch["inputs"]) == (rows, LENGTH // shape["sequence"], 1)
    assert shard(batch["lengths"]) == (rows,)


def test_a_dimension_the_mesh_does_not_divide_is_replicated():
    """d_model 6 over fsdp 2 splits; 3 x 2 head units and 6 GLU units over tensor 4 do not, and stay whole."""
    mesh = make_mesh(data=1, fsdp=2, tensor=4)
    model = make_model("linear_attention", d_model=6, num_heads=3, head_dim=2)
    state, loss, _ = one_step(model, mesh)
    assert np.isfinite(loss)
    block = state.params["blocks_0"]
    assert block["gate"]["kernel"].sharding.spec == PartitionSpec("fsdp", None)
    assert block["mixer"]["query"]["kernel"].sharding.spec == PartitionSpec("fsdp", None)
    assert block["mixer"]["out"]["kernel"].sharding.spec == PartitionSpec(None, "fsdp")
    assert all(m.sharding == p.sharding for m, p in moment_pairs(state))


def test_fit_spec_keeps_the_axes_that_divide():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    assert fit_spec(PartitionSpec("fsdp", "tensor"), (6, 5), mesh) == PartitionSpec("fsdp", None)
    assert fit_spec(PartitionSpec(("data", "fsdp"), None), (2, 3), mesh) == PartitionSpec("data", None)
    assert fit_spec(PartitionSpec(("data", "fsdp")), (4, 3), mesh) == PartitionSpec(("data", "fsdp"), None)
    assert fit_spec(PartitionSpec(), (3,), mesh) == PartitionSpec(None)


def test_activations_keep_embed_whole_and_every_logical_name_has_a_rule():
    """fsdp goes to the batch of an activation, so its embed stays unsplit; and every logical name
    any registered mixer's parameters use is mapped by a rule."""
    assert nn.logical_to_mesh_axes(("batch", "length", "embed"), LOGICAL_AXIS_RULES) == PartitionSpec(
        ("data", "fsdp"), "sequence", None
    )
    assert nn.logical_to_mesh_axes(("embed", "mlp"), LOGICAL_AXIS_RULES) == PartitionSpec("fsdp", "tensor")
    rule_names = {name for name, _ in LOGICAL_AXIS_RULES}
    for _, axes in LOGICAL_AXIS_RULES:
        assert set(jax.tree.leaves(axes)) <= set(MESH_AXES)
    for mixer in MIXERS:
        model = SequenceClassifier(num_classes=3, d_model=16, num_layers=1, mixer=mixer, vocab_size=7)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32)))
        used = {
            name for leaf in jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, meta.AxisMetadata))
            if isinstance(leaf, nn.Partitioned) for name in leaf.names if name is not None
        }
        assert used <= rule_names, (mixer, used - rule_names)
        shardings = logical_shardings(variables["params"], make_mesh(fsdp=8, data=1))
        assert any(not s.is_fully_replicated for s in jax.tree.leaves(shardings)), mixer


def test_batch_spec_splits_positions_only_when_they_divide():
    mesh = make_mesh(data=2, fsdp=1, sequence=4)
    assert batch_spec((8, 16, 3), mesh) == PartitionSpec(("data", "fsdp"), "sequence")
    assert batch_spec((8, 10), mesh) == PartitionSpec(("data", "fsdp"))
    assert batch_spec((8,), mesh) == PartitionSpec(("data", "fsdp"))
    with pytest.raises(ValueError, match="does not split over data x fsdp"):
        batch_spec((3, 16), mesh)


def test_presets_and_overrides_resolve():
    assert resolve_mesh_sizes() == {"data": -1, "fsdp": 1, "sequence": 1, "tensor": 1}
    assert resolve_mesh_sizes("fsdp_tensor", tensor=4) == {"data": 1, "fsdp": -1, "sequence": 1, "tensor": 4}
    config = default_config()
    config.mesh.preset = "fsdp"
    config.mesh.data = 2
    assert mesh_sizes(config.mesh, num_devices=8) == {"data": 2, "fsdp": 4, "sequence": 1, "tensor": 1}
    for name in MESH_PRESETS:
        config.mesh.update(preset=name, data=-1)
        assert np.prod(list(mesh_sizes(config.mesh, 8).values())) == 8


@pytest.mark.parametrize(
    "fields, num_devices, match",
    [
        ({"fsdp": 0}, None, r"config.mesh.fsdp=0 must be -1 or >= 1"),
        ({"tensor": -1}, None, r"config.mesh: at most one axis may be -1 .*\['data', 'tensor'\]"),
        ({"preset": "zero3"}, None, r"config.mesh.preset='zero3' is not one of"),
        ({"preset": "fsdp", "sequence": -1}, None, r"at most one axis may be -1 .*preset 'fsdp'"),
        ({"fsdp": 3}, 8, r"config.mesh: data=-1 x fsdp=3 needs a multiple of 3 devices .* there are 8"),
        ({"data": 4, "tensor": 4}, 8, r"data=4 x tensor=4 needs a multiple of 16 devices"),
    ],
)
def test_bad_mesh_fields_are_named(fields, num_devices, match):
    config = default_config()
    config.mesh.update(fields)
    with pytest.raises(ValueError, match=match):
        validate_config(config, num_devices=num_devices)


def test_batch_and_length_must_split_over_the_mesh():
    config = default_config()
    task = types.SimpleNamespace(splits={"train": {"inputs": np.zeros((4, 12, 1))}, "test": {"inputs": np.zeros((4, 10))}})
    config.train.batch_size = 12
    with pytest.raises(ValueError, match=r"config.train.batch_size=12 must be divisible by the 8 devices that split the batch \(mesh data x fsdp"):
        _check_batch_layout(config, task, make_mesh(data=2, fsdp=4))
    config.train.update(batch_size=16, eval_batch_size=16)
    _check_batch_layout(config, task, make_mesh(data=2, sequence=2, tensor=2))
    with pytest.raises(ValueError, match=r"config.mesh.sequence=4: the test split's sequence length 10"):
        _check_batch_layout(config, task, make_mesh(data=2, sequence=4))

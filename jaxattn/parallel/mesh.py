"""Device meshes, logical axis rules and the shardings derived from them.

Every mesh has the same four axes, outermost first ``("data", "fsdp", "sequence", "tensor")``:
an axis of size 1 costs nothing, so one set of rules serves every layout, and the innermost
(fastest-linked, on TPU and GPU the neighbouring) devices get the axis that communicates most
(``tensor``: an all-reduce per layer), the outermost the one that communicates least (``data``: one
gradient all-reduce per step).

Modules name the axes of their parameters and activations logically (``embed``, ``ssm_state``,
``batch``, ...); :data:`LOGICAL_AXIS_RULES` maps them to mesh axes:

=============  ====================  ================================================================
logical axis   mesh axis             why
=============  ====================  ================================================================
``batch``      ``("data", "fsdp")``  examples split over every data-parallel replica; FSDP is data
                                     parallel too (each device runs its own examples)
``length``     ``sequence``          sequence parallelism: each device holds a contiguous block of
                                     positions (``jaxattn.parallel.sequence`` combines the blocks)
``embed``      ``fsdp``              FSDP / ZeRO-3: every weight (and its Adam moments) is split along
                                     its model dimension and gathered when used. On activations
                                     ``[batch, length, embed]`` ``fsdp`` is already taken by
                                     ``batch`` (rules apply in order and a mesh axis is used at most
                                     once per array), so activations keep ``embed`` whole
``heads``      ``tensor``            Megatron tensor parallelism: attention heads per device; input
                                     projections ``[embed, heads]`` split by column, output
                                     projections ``[heads, embed]`` by row
``mlp``        ``tensor``            the same for the block's GLU / gate projections ``[embed, mlp]``
``ssm_state``  ``tensor``            SSM modes are independent (a diagonal recurrence): ``B``
                                     ``[ssm_state, embed]`` splits like an input projection, ``C``
                                     ``[embed, ssm_state]`` like an output projection
``vocab``      ``tensor``            embedding rows (vocabulary-parallel embedding and logits)
``features``   replicated            the raw input features of the encoder: few (often 1)
``classes``    replicated            the decoder's outputs: few, too small to split
=============  ====================  ================================================================

Unannotated parameters (and logical names without a rule) are replicated. A dimension whose size
a rule's mesh axes do not divide (``jax.jit`` needs even shards) keeps only the axes that divide it,
replicated when none does (:func:`fit_spec`); the parameter still trains, merely less sharded.

Batches (:func:`batch_spec`): dimension 0 over ``("data", "fsdp")``, dimension 1 (positions) of
``[B, L, ...]`` arrays over ``sequence`` when it divides ``L``.

See docs/architecture.md#sharding-and-meshes and docs/architecture.md#mesh-presets.
"""

import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
TENSOR_AXIS = "tensor"
SEQUENCE_AXIS = "sequence"
# Mesh axes that split the batch: plain data parallelism and FSDP (which also shards parameters).
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# Every mesh's axes, outermost first: tensor innermost (it communicates every layer).
MESH_AXES = (DATA_AXIS, FSDP_AXIS, SEQUENCE_AXIS, TENSOR_AXIS)

# (logical axis, mesh axis or axes), in priority order: an array dimension takes the first rule
# for its name whose mesh axes no earlier dimension of the same array uses. Unlisted logical axes
# are replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("length", SEQUENCE_AXIS),
    ("embed", FSDP_AXIS),
    ("heads", TENSOR_AXIS),
    ("mlp", TENSOR_AXIS),
    ("ssm_state", TENSOR_AXIS),
    ("vocab", TENSOR_AXIS),
    ("features", None),
    ("classes", None),
)

# Mesh axis sizes when nothing else is said: every device data parallel.
DEFAULT_MESH_SIZES = {DATA_AXIS: -1, FSDP_AXIS: 1, TENSOR_AXIS: 1, SEQUENCE_AXIS: 1}

# Named layouts (axis -> size; -1 takes the devices left over). Axes not named are 1.
MESH_PRESETS: dict[str, dict[str, int]] = {
    # Parameters and optimiser state replicated, batch split: small models.
    "data": {DATA_AXIS: -1},
    # ZeRO-3: parameters, gradients and Adam moments split over every device, batch split too.
    "fsdp": {DATA_AXIS: 1, FSDP_AXIS: -1},
    # Heads, GLU width and SSM modes split over every device; each device sees the whole batch.
    "tensor": {DATA_AXIS: 1, TENSOR_AXIS: -1},
    # Positions split over every device: long sequences at batch size 1.
    "sequence": {DATA_AXIS: 1, SEQUENCE_AXIS: -1},
    # FSDP across pairs of tensor-parallel devices.
    "fsdp_tensor": {DATA_AXIS: 1, FSDP_AXIS: -1, TENSOR_AXIS: 2},
    # Data parallel across pairs of sequence-parallel devices.
    "data_sequence": {DATA_AXIS: -1, SEQUENCE_AXIS: 2},
    # Hybrid sharded data parallel: parameters split within groups of 2, replicated across groups.
    "data_fsdp": {DATA_AXIS: -1, FSDP_AXIS: 2},
}


def resolve_mesh_sizes(preset: str = "", **sizes: int) -> dict[str, int]:
    """The four axis sizes of a preset, overridden by every size that differs from its default.

    ``resolve_mesh_sizes("fsdp_tensor", tensor=4)`` -> ``{"data": 1, "fsdp": -1, "sequence": 1,
    "tensor": 4}``; without a preset the sizes are taken as given (missing ones at their default).
    Checks what needs no devices: known preset and axes, sizes -1 or >= 1, at most one -1.

    Raises:
      ValueError naming the field (``mesh.<axis>``, ``mesh.preset``).
    """
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh: unknown axes {unknown}; the mesh axes are {list(MESH_AXES)}")
    if preset and preset not in MESH_PRESETS:
        raise ValueError(f"mesh.preset={preset!r} is not one of {sorted(MESH_PRESETS)} (or '' for none)")
    resolved = dict(DEFAULT_MESH_SIZES)
    if preset:
        resolved.update({axis: 1 for axis in MESH_AXES}, **MESH_PRESETS[preset])
    for axis, size in sizes.items():
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise ValueError(f"mesh.{axis}={size!r} must be an int")
        if not (size == -1 or size >= 1):
            raise ValueError(f"mesh.{axis}={size} must be -1 or >= 1")
        if not preset or size != DEFAULT_MESH_SIZES[axis]:
            resolved[axis] = int(size)
    filled = [axis for axis in MESH_AXES if resolved[axis] == -1]
    if len(filled) > 1:
        where = f" (preset {preset!r} with overrides)" if preset else ""
        raise ValueError(f"mesh: at most one axis may be -1 (the remaining devices), got {filled}{where}")
    return {axis: resolved[axis] for axis in MESH_AXES}


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """``sizes`` with the -1 axis filled from ``num_devices``.

    With a -1 axis the other sizes' product must divide ``num_devices``; without one, the product
    must divide it too (the mesh then takes the first ``product`` devices).
    """
    sizes = {axis: int(sizes.get(axis, 1)) for axis in MESH_AXES}
    described = " x ".join(f"{axis}={size}" for axis, size in sizes.items() if size != 1) or "all axes 1"
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if num_devices % fixed:
        raise ValueError(
            f"mesh: {described} needs a multiple of {fixed} devices (the product of the fixed sizes), "
            f"but there are {num_devices}"
        )
    return {axis: (num_devices // fixed if size == -1 else size) for axis, size in sizes.items()}


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, sequence: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 4-axis ``("data", "fsdp", "sequence", "tensor")`` mesh of Auto axes.

    One size may be -1: the devices left over. If the product of the sizes is less than the
    number of devices (default ``jax.devices()``), the mesh takes the first ones.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_sizes(data=data, fsdp=fsdp, tensor=tensor, sequence=sequence)
    shape = mesh_shape(sizes, len(devices))
    size = math.prod(shape.values())
    if size < len(devices) and jax.process_count() > 1:
        raise ValueError(f"mesh: {shape} covers {size} of {len(devices)} devices; with several processes it must cover all")
    return jax.make_mesh(
        tuple(shape[axis] for axis in MESH_AXES), MESH_AXES,
        axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices[:size],
    )


def batch_axis_size(mesh: Mesh) -> int:
    """How many ways a batch is split: ``data * fsdp``."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """``spec`` with, per dimension, only the mesh axes whose sizes divide it (in order).

    ``jax.jit`` arguments and results need even shards: ``[10, 16]`` under ``P("tensor", "fsdp")``
    with 8 tensor devices becomes ``P(None, "fsdp")``.
    """
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    fitted = []
    for dim, entry in zip(shape, entries):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        kept, split = [], 1
        for name in names:
            if dim % (split * mesh.shape[name]) == 0:
                kept.append(name)
                split *= mesh.shape[name]
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def logical_shardings(boxed_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """``NamedSharding`` tree (unboxed structure) from a tree with ``nn.Partitioned`` annotations.

    Leaves are arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``); a dimension the
    rules' mesh axes do not divide is left (partly) replicated, see :func:`fit_spec`.
    """
    logical_specs = nn.get_partition_spec(boxed_tree)
    shapes = nn.unbox(boxed_tree)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, fit_spec(nn.logical_to_mesh_axes(spec, rules), leaf.shape, mesh)),
        logical_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_spec(shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """A batch array's spec: dim 0 over ``("data", "fsdp")``; dim 1 (positions) over ``sequence``
    when it divides. ``shape`` is global.

    Raises:
      ValueError if the batch axes do not divide the leading dimension.
    """
    if not shape:
        return PartitionSpec()
    split = batch_axis_size(mesh)
    if shape[0] % split:
        raise ValueError(
            f"a batch of {shape[0]} rows does not split over data x fsdp = "
            f"{mesh.shape[DATA_AXIS]} x {mesh.shape[FSDP_AXIS]} devices"
        )
    if len(shape) >= 2 and shape[1] % mesh.shape[SEQUENCE_AXIS] == 0:
        return PartitionSpec(BATCH_AXES, SEQUENCE_AXIS)
    return PartitionSpec(BATCH_AXES)


def batch_shardings(batch, mesh: Mesh):
    """A ``NamedSharding`` per leaf of ``batch`` (arrays of global shape), see :func:`batch_spec`."""
    return jax.tree.map(lambda x: NamedSharding(mesh, batch_spec(np.shape(x), mesh)), batch)


def device_put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's local rows (same call on every process).

    Each process holds ``rows / process_count`` whole rows (every position), as the data iterators
    give them; the global array has ``rows`` rows, split as :func:`batch_spec` says.
    """
    processes = jax.process_count()
    if batch_axis_size(mesh) % processes:
        raise ValueError(
            f"data x fsdp = {batch_axis_size(mesh)} must be a multiple of the {processes} processes: each "
            "process loads its own rows, so the batch axes must split the batch at least that many ways"
        )
    placed = {}
    for key, value in batch.items():
        value = np.asarray(value)
        global_shape = (value.shape[0] * processes, *value.shape[1:])
        sharding = NamedSharding(mesh, batch_spec(global_shape, mesh))
        placed[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return placed

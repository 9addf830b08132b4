"""Device meshes, logical axis rules and the shardings derived from them.

Modules name the axes of their parameters and activations logically (``embed``, ``ssm_state``,
``batch``, ...); the rules below map them to mesh axes, so the same model shards under any mesh.
Issue-level presets (FSDP, tensor, sequence) extend these rules; with a pure data-parallel mesh
every parameter is replicated and the batch is split over ``data``.
"""

from collections.abc import Sequence

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

# (logical axis, mesh axis or None). Unlisted logical axes are replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA_AXIS),
    ("length", None),
    ("embed", None),
    ("mlp", None),
    ("ssm_state", None),
    ("heads", None),
    ("vocab", None),
    ("features", None),
    ("classes", None),
)


def make_data_mesh(num_devices: int = -1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over ``num_devices`` devices (-1: all)."""
    devices = list(jax.devices() if devices is None else devices)
    if num_devices == -1:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(f"mesh.data={num_devices} must be -1 or in [1, {len(devices)}] (devices available)")
    return jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:num_devices])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def logical_shardings(boxed_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """``NamedSharding`` tree (unboxed structure) from a tree with ``nn.Partitioned`` annotations."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


def device_put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's local rows (same call on every process)."""
    sharding = batch_sharding(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()}

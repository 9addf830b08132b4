"""Meshes, logical axis rules and sequence parallelism."""

from jaxattn.parallel.mesh import (
    BATCH_AXES,
    DATA_AXIS,
    DEFAULT_MESH_SIZES,
    FSDP_AXIS,
    LOGICAL_AXIS_RULES,
    MESH_AXES,
    MESH_PRESETS,
    SEQUENCE_AXIS,
    TENSOR_AXIS,
    batch_axis_size,
    batch_shardings,
    batch_spec,
    device_put_batch,
    fit_spec,
    logical_shardings,
    make_mesh,
    mesh_shape,
    replicated,
    resolve_mesh_sizes,
)

__all__ = [
    "BATCH_AXES", "DATA_AXIS", "DEFAULT_MESH_SIZES", "FSDP_AXIS", "LOGICAL_AXIS_RULES", "MESH_AXES", "MESH_PRESETS",
    "SEQUENCE_AXIS", "TENSOR_AXIS", "batch_axis_size", "batch_shardings", "batch_spec",
    "device_put_batch", "fit_spec", "logical_shardings", "make_mesh", "mesh_shape", "replicated",
    "resolve_mesh_sizes",
]

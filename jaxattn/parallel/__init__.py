"""Meshes, logical axis rules and sequence parallelism."""

from jaxattn.parallel.mesh import (
    BATCH_AXES,
    DATA_AXIS,
    FSDP_AXIS,
    SEQUENCE_AXIS,
    TENSOR_AXIS,
    LOGICAL_AXIS_RULES,
    batch_sharding,
    device_put_batch,
    logical_shardings,
    make_data_mesh,
    replicated,
)

__all__ = [
    "BATCH_AXES", "DATA_AXIS", "FSDP_AXIS", "SEQUENCE_AXIS", "TENSOR_AXIS", "LOGICAL_AXIS_RULES", "batch_sharding", "device_put_batch", "logical_shardings",
    "make_data_mesh", "replicated",
]

"""GPU (Triton backend) diagonal scan: one program per (batch, feature tile) walks the whole
sequence, one coalesced row of features per time step, with the carry in registers; the loads of
``unroll`` steps are issued together, since the scan is bound by memory latency. Tiles, unroll,
warps and stages: :class:`~pallas_kernels.diagonal_scan.block_sizes.ScanBlockSizes`.

See docs/ssm.md#the-parallel-scan.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.diagonal_scan import recurrence


def _kernel(*refs, parts, length, reverse, unroll):
    a_refs, b_refs, h0_refs = refs[:parts], refs[parts : 2 * parts], refs[2 * parts : 3 * parts]
    h_refs, last_refs = refs[3 * parts : 4 * parts], refs[4 * parts :]

    h0 = tuple(r[...].astype(jnp.float32) for r in h0_refs)
    h = recurrence.scan_rows(a_refs, b_refs, h_refs, h0, length, reverse, unroll)
    for ref, value in zip(last_refs, h):
        ref[...] = value


def scan(a: tuple, b: tuple, h0: tuple, *, reverse: bool, block_sizes, interpret: bool = False) -> tuple:
    """Same contract as :func:`pallas_kernels.diagonal_scan.tpu.scan` (F a multiple of the feature
    tile, any T); ``block_sizes``: a resolved Triton ``ScanBlockSizes``. Half-precision rows are
    loaded and stored as they are, widened to fp32 in registers (:func:`recurrence.scan_rows`)."""
    batch, length, features = a[0].shape
    feature_tile, unroll = block_sizes.feature_tile, block_sizes.unroll
    parts = len(a)
    seq_spec = pl.BlockSpec((None, length, feature_tile), lambda i, f: (i, 0, f))
    row_spec = pl.BlockSpec((None, 1, feature_tile), lambda i, f: (i, 0, f))
    outputs = pl.pallas_call(
        lambda *refs: _kernel(*refs, parts=parts, length=length, reverse=reverse, unroll=unroll),
        grid=(batch, features // feature_tile),
        in_specs=[seq_spec] * (2 * parts) + [row_spec] * parts,
        out_specs=[seq_spec] * parts + [row_spec] * parts,
        out_shape=[jax.ShapeDtypeStruct(b[0].shape, b[0].dtype)] * parts
        + [jax.ShapeDtypeStruct(h0[0].shape, jnp.float32)] * parts,
        compiler_params=pltriton.CompilerParams(num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages),
        interpret=interpret,
        name="diagonal_scan",
    )(*a, *b, *h0)
    return tuple(outputs[:parts]), tuple(outputs[parts:])

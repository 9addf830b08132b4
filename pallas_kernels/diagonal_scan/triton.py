"""GPU (Triton backend) diagonal scan: one program per (batch, feature tile) walks the whole
sequence, one coalesced row of features per time step, with the carry in registers; the loads of
:data:`UNROLL` steps are issued together, since the scan is bound by memory latency.

See docs/ssm.md#the-parallel-scan.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.diagonal_scan import recurrence

FEATURE_TILE = 128
# Time steps per loop iteration (recurrence.scan_rows): on an H100 (B=8, T=16384, F=1024, fp32 forward)
# 1 row took 7.5 ms, 4 rows 2.6 ms, 8 rows 2.4 ms, 16 rows 1.4 ms (results/bench_gpu_h100/logs/tune_scan.log).
UNROLL = 16


def _kernel(*refs, parts, length, reverse, unroll):
    a_refs, b_refs, h0_refs = refs[:parts], refs[parts : 2 * parts], refs[2 * parts : 3 * parts]
    h_refs, last_refs = refs[3 * parts : 4 * parts], refs[4 * parts :]

    h = recurrence.scan_rows(a_refs, b_refs, h_refs, tuple(r[...] for r in h0_refs), length, reverse, unroll)
    for ref, value in zip(last_refs, h):
        ref[...] = value


def scan(a: tuple, b: tuple, h0: tuple, *, reverse: bool, interpret: bool = False, num_warps: int = 4,
         unroll: int = UNROLL) -> tuple:
    """Same contract as :func:`pallas_kernels.diagonal_scan.tpu.scan` (F a multiple of 128, any T)."""
    batch, length, features = a[0].shape
    parts = len(a)
    seq_spec = pl.BlockSpec((None, length, FEATURE_TILE), lambda i, f: (i, 0, f))
    row_spec = pl.BlockSpec((None, 1, FEATURE_TILE), lambda i, f: (i, 0, f))
    outputs = pl.pallas_call(
        lambda *refs: _kernel(*refs, parts=parts, length=length, reverse=reverse, unroll=unroll),
        grid=(batch, features // FEATURE_TILE),
        in_specs=[seq_spec] * (2 * parts) + [row_spec] * parts,
        out_specs=[seq_spec] * parts + [row_spec] * parts,
        out_shape=[jax.ShapeDtypeStruct(a[0].shape, jnp.float32)] * parts
        + [jax.ShapeDtypeStruct(h0[0].shape, jnp.float32)] * parts,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
        interpret=interpret,
        name="diagonal_scan",
    )(*a, *b, *h0)
    return tuple(outputs[:parts]), tuple(outputs[parts:])

"""TPU (Mosaic) diagonal scan: grid (batch, feature tile, time tile) with the time axis sequential.

Arrays are ``[B, T, F]`` with features on lanes (tiles of 128) and time on sublanes, so a time step
is one row of the block and the carry ``[1, F_tile]`` stays in VMEM scratch across time tiles. Tiles:
:class:`~pallas_kernels.diagonal_scan.block_sizes.ScanBlockSizes`.

See docs/ssm.md#the-parallel-scan.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.diagonal_scan import recurrence


def _kernel(*refs, parts, time_tile, reverse):
    a_refs, b_refs, h0_refs = refs[:parts], refs[parts : 2 * parts], refs[2 * parts : 3 * parts]
    h_refs, last_refs, carry = refs[3 * parts : 4 * parts], refs[4 * parts : 5 * parts], refs[5 * parts :]

    @pl.when(pl.program_id(2) == 0)
    def _():
        for c, h0 in zip(carry, h0_refs):
            c[...] = h0[...]

    h = recurrence.scan_rows(a_refs, b_refs, h_refs, tuple(c[...] for c in carry), time_tile, reverse)
    for c, value in zip(carry, h):
        c[...] = value

    @pl.when(pl.program_id(2) == pl.num_programs(2) - 1)
    def _():
        for ref, value in zip(last_refs, h):
            ref[...] = value


def scan(a: tuple, b: tuple, h0: tuple, *, reverse: bool, block_sizes, interpret: bool = False) -> tuple:
    """``a, b``: parts ``[B, T, F]`` fp32 with T a multiple of the time tile (or smaller than it) and
    F of the feature tile (``block_sizes``, resolved); ``h0``: parts ``[B, 1, F]``. Returns
    ``(h parts [B, T, F], last parts [B, 1, F])``."""
    batch, length, features = a[0].shape
    time_tile, feature_tile = min(block_sizes.time_tile, length), block_sizes.feature_tile
    parts = len(a)
    num_tiles = length // time_tile
    tile = (lambda n: num_tiles - 1 - n) if reverse else (lambda n: n)
    seq_spec = pl.BlockSpec((None, time_tile, feature_tile), lambda i, f, n: (i, tile(n), f))
    row_spec = pl.BlockSpec((None, 1, feature_tile), lambda i, f, n: (i, 0, f))
    outputs = pl.pallas_call(
        lambda *refs: _kernel(*refs, parts=parts, time_tile=time_tile, reverse=reverse),
        grid=(batch, features // feature_tile, num_tiles),
        in_specs=[seq_spec] * (2 * parts) + [row_spec] * parts,
        out_specs=[seq_spec] * parts + [row_spec] * parts,
        out_shape=[jax.ShapeDtypeStruct(a[0].shape, jnp.float32)] * parts
        + [jax.ShapeDtypeStruct(h0[0].shape, jnp.float32)] * parts,
        scratch_shapes=[pltpu.VMEM((1, feature_tile), jnp.float32)] * parts,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="diagonal_scan",
    )(*a, *b, *h0)
    return tuple(outputs[:parts]), tuple(outputs[parts:])

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


def _kernel(*refs, parts, time_tile, reverse, staged):
    a_refs, b_refs, h0_refs = refs[:parts], refs[parts : 2 * parts], refs[2 * parts : 3 * parts]
    h_refs, last_refs = refs[3 * parts : 4 * parts], refs[4 * parts : 5 * parts]
    carry, wide = refs[5 * parts : 6 * parts], refs[6 * parts :]

    @pl.when(pl.program_id(2) == 0)
    def _():
        for c, h0 in zip(carry, h0_refs):
            c[...] = h0[...].astype(jnp.float32)

    rows_a, rows_b, rows_h = a_refs, b_refs, h_refs
    if staged:
        # Half-precision tiles are widened whole in VMEM: Mosaic packs two bf16 rows per sublane, so
        # the row-at-a-time loads and stores of the scan run on fp32 copies of the tile instead.
        rows_a, rows_b, rows_h = wide[:parts], wide[parts : 2 * parts], wide[2 * parts :]
        for copy, ref in zip(rows_a + rows_b, a_refs + b_refs):
            copy[...] = ref[...].astype(jnp.float32)
    h = recurrence.scan_rows(rows_a, rows_b, rows_h, tuple(c[...] for c in carry), time_tile, reverse)
    for c, value in zip(carry, h):
        c[...] = value
    if staged:
        for ref, copy in zip(h_refs, rows_h):
            ref[...] = copy[...].astype(ref.dtype)

    @pl.when(pl.program_id(2) == pl.num_programs(2) - 1)
    def _():
        for ref, value in zip(last_refs, h):
            ref[...] = value


def scan(a: tuple, b: tuple, h0: tuple, *, reverse: bool, block_sizes, interpret: bool = False) -> tuple:
    """``a, b``: parts ``[B, T, F]`` of one dtype (fp32, bf16 or fp16) with T a multiple of the time
    tile (or smaller than it) and F of the feature tile (``block_sizes``, resolved); ``h0``: parts
    ``[B, 1, F]``. Returns ``(h parts [B, T, F]`` in the dtype of ``b``, ``last parts [B, 1, F]`` fp32):
    the state is carried in fp32 and only rounded where it is stored, so no conversion pass over
    the sequence runs outside the kernel."""
    batch, length, features = a[0].shape
    time_tile, feature_tile = min(block_sizes.time_tile, length), block_sizes.feature_tile
    parts = len(a)
    num_tiles = length // time_tile
    tile = (lambda n: num_tiles - 1 - n) if reverse else (lambda n: n)
    seq_spec = pl.BlockSpec((None, time_tile, feature_tile), lambda i, f, n: (i, tile(n), f))
    row_spec = pl.BlockSpec((None, 1, feature_tile), lambda i, f, n: (i, 0, f))
    staged = b[0].dtype != jnp.float32
    tile_copies = [pltpu.VMEM((time_tile, feature_tile), jnp.float32)] * (3 * parts if staged else 0)
    outputs = pl.pallas_call(
        lambda *refs: _kernel(*refs, parts=parts, time_tile=time_tile, reverse=reverse, staged=staged),
        grid=(batch, features // feature_tile, num_tiles),
        in_specs=[seq_spec] * (2 * parts) + [row_spec] * parts,
        out_specs=[seq_spec] * parts + [row_spec] * parts,
        out_shape=[jax.ShapeDtypeStruct(b[0].shape, b[0].dtype)] * parts
        + [jax.ShapeDtypeStruct(h0[0].shape, jnp.float32)] * parts,
        scratch_shapes=[pltpu.VMEM((1, feature_tile), jnp.float32)] * parts + tile_copies,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="diagonal_scan",
    )(*a, *b, *h0)
    return tuple(outputs[:parts]), tuple(outputs[parts:])

"""``h_t = a_t h_{t-1} + b_t`` on rows of features, real or complex as (re, im) parts.

See docs/ssm.md#the-parallel-scan.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def step(a: tuple, b: tuple, h: tuple) -> tuple:
    """``a, b, h``: tuples of one (real) or two (re, im) arrays of the same shape; ``a`` and ``b`` may be
    bf16 or fp16 (as loaded), ``h`` is fp32: they are widened here, so the state stays fp32."""
    a, b = _widened(a), _widened(b)
    if len(a) == 1:
        return (a[0] * h[0] + b[0],)
    (a_re, a_im), (b_re, b_im), (h_re, h_im) = a, b, h
    return (a_re * h_re - a_im * h_im + b_re, a_re * h_im + a_im * h_re + b_im)


def _widened(parts: tuple) -> tuple:
    return tuple(p.astype(jnp.float32) for p in parts)


def scan_rows(a_refs, b_refs, h_refs, h: tuple, num_rows: int, reverse: bool, unroll: int = 1) -> tuple:
    """Runs the recurrence over ``num_rows`` rows (time steps) of the blocks behind ``a_refs`` and
    ``b_refs`` (one ref a part), writing each state to ``h_refs``; returns the last state (fp32).

    The refs may hold bf16 or fp16: each row is widened to fp32 as it is loaded and each state rounded
    to the ref's dtype as it is stored, so a half-precision scan reads and writes half the bytes and
    still carries its state in fp32.

    ``unroll`` rows a loop iteration, all loaded before the first state is computed and stored: the
    loads then wait on memory once per iteration, not once per row (a GPU's scan is latency bound).
    """

    def row(i):
        return pl.ds(num_rows - 1 - i if reverse else i, 1)

    def rows_step(first, count, h):
        rows = [row(first + u) for u in range(count)]
        inputs = [(tuple(r[i, :] for r in a_refs), tuple(r[i, :] for r in b_refs)) for i in rows]
        for i, (a, b) in zip(rows, inputs):
            h = step(a, b, h)
            for ref, value in zip(h_refs, h):
                ref[i, :] = value.astype(ref.dtype)
        return h

    blocks = num_rows // unroll
    h = jax.lax.fori_loop(0, blocks, lambda n, h: rows_step(n * unroll, unroll, h), h)
    return jax.lax.fori_loop(blocks * unroll, num_rows, lambda i, h: rows_step(i, 1, h), h)

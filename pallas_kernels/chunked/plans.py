"""What one chunked kernel call is, decided once by :mod:`pallas_kernels.chunked` and read by both
backends: :class:`SweepPlan` for :func:`~pallas_kernels.chunked.sweep`, :class:`ChunkwisePlan` for
:func:`~pallas_kernels.chunked.chunkwise`.

See docs/linear_attention.md#the-pallas-kernels.
"""

from collections.abc import Callable
from typing import NamedTuple, Optional

from jax.experimental import pallas as pl


class SweepPlan(NamedTuple):
    """A sweep over ``N = T / C`` chunks of ``[B, H, T, D]`` head-major sequences.

    Fields: ``body(blocks, decay, carry) -> (outputs, carry)`` for one chunk; ``out_widths``, the
    widths ``w`` of its ``[C, w]`` output blocks; ``chunk_size`` C; ``name``, the kernel's name (in
    errors and profiles); ``reverse``, chunks last to first; ``carry_history``, also return the carry
    each chunk received; the geometry ``batch`` B, ``heads`` H, ``length`` T; and ``value_inputs`` /
    ``value_outputs``, the sequence inputs and outputs whose last axis is the carry's value axis V,
    named by a sweep whose body treats value columns independently (:meth:`value_blocks`).
    """

    body: Callable
    out_widths: tuple[int, ...]
    chunk_size: int
    name: str
    reverse: bool
    carry_history: bool
    batch: int
    heads: int
    length: int
    value_inputs: tuple[int, ...] = ()
    value_outputs: tuple[int, ...] = ()

    def value_blocks(self, value_dim: int, block_v: Optional[int]) -> tuple[int, int]:
        """``(block width, number of blocks)`` of the value axis (``value_dim`` wide, as the kernel
        sees it): ``block_v`` columns each where this sweep may split V and ``block_v`` is narrower,
        else one block of all of V."""
        if not self.value_inputs or block_v is None or block_v >= value_dim:
            return value_dim, 1
        return block_v, -(-value_dim // block_v)

    @property
    def num_chunks(self) -> int:
        """N = T / C (the caller pads T to a multiple of C)."""
        return self.length // self.chunk_size

    @property
    def kernel_name(self) -> str:
        return f"{self.name.replace(' ', '_')}_sweep"


class ChunkwisePlan(NamedTuple):
    """``body(blocks) -> outputs`` on every chunk of ``num_inputs`` inputs ``[B, H, N, r_i, c_i]``,
    one ``[r_i, c_i]`` block each, writing one ``[r, c]`` block per ``out_blocks`` entry; grid
    ``(batch, heads, num_chunks)``, every program independent."""

    body: Callable
    out_blocks: tuple[tuple[int, int], ...]
    name: str
    num_inputs: int
    batch: int
    heads: int
    num_chunks: int

    def kernel(self, *refs) -> None:
        """One chunk: the input refs, then the output refs, each output stored in its ref's dtype."""
        outputs = self.body([r[...] for r in refs[: self.num_inputs]])
        for ref, value in zip(refs[self.num_inputs :], outputs):
            ref[...] = value.astype(ref.dtype)

    @staticmethod
    def block_spec(shape: tuple[int, ...]) -> pl.BlockSpec:
        """The ``shape`` block of program (batch, head, chunk) in a ``[B, H, N, *shape]`` array."""
        return pl.BlockSpec((None, None, None, *shape), lambda i, j, n: (i, j, n, 0, 0))

    @property
    def kernel_name(self) -> str:
        return self.name.replace(" ", "_")

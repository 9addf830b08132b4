"""What one chunk sweep is, decided once by :func:`pallas_kernels.chunked.sweep` and read by both backends."""

from collections.abc import Callable
from typing import NamedTuple


class SweepPlan(NamedTuple):
    """A sweep over ``N = T / C`` chunks of ``[B, H, T, D]`` head-major sequences.

    Fields: ``body(blocks, decay, carry) -> (outputs, carry)`` for one chunk; ``out_widths``, the
    widths ``w`` of its ``[C, w]`` output blocks; ``chunk_size`` C; ``name``, the kernel's name (in
    errors and profiles); ``reverse``, chunks last to first; ``carry_history``, also return the carry
    each chunk received; and the geometry ``batch`` B, ``heads`` H, ``length`` T.
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

    @property
    def num_chunks(self) -> int:
        """N = T / C (the caller pads T to a multiple of C)."""
        return self.length // self.chunk_size

    @property
    def kernel_name(self) -> str:
        return f"{self.name.replace(' ', '_')}_sweep"

"""Kernel runners for chunked recurrences (linear attention, the delta rule), per platform.

Sequences are head-major ``[B, H, T, D]`` with T a multiple of the chunk size C, cut into
``N = T / C`` chunks; a recurrence supplies per-chunk block math and picks one of two shapes:

* :func:`sweep`: the chunks of each (batch, head) in order (or in reverse), threading a carry
  (a ``[K, V]`` state or its gradient) through ``body(blocks, decay, carry) -> (outputs, carry)``,
  with ``blocks`` the chunk's ``[C, D]`` rows of each sequence input and ``decay`` its
  :class:`~pallas_kernels.chunked.decay.ChunkDecay` (None without decay). Optionally it also
  returns the carry as the body received it at every chunk (``carry_history``), which a backward
  pass needs where the carry cannot be run backwards.
* :func:`chunkwise`: every chunk independently (the parallel work of a chunked algorithm):
  inputs ``[B, H, N, r, c]``, one ``[r, c]`` block each, ``body(blocks) -> outputs``.

The TPU module (Mosaic) and the Triton module run the same bodies; :func:`run_on_platform` picks
one by lowering platform (the Triton one in the interpreter elsewhere). A sweep's options and
geometry are fixed once here, in a :mod:`~pallas_kernels.chunked.plans` record that both backends
read, and so are their launch settings
(:class:`~pallas_kernels.chunked.block_sizes.ChunkedBlockSizes`). Outputs are fp32.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Optional

import jax

from pallas_kernels.block_sizes import operand_class
from pallas_kernels.chunked import tpu, triton
from pallas_kernels.chunked.block_sizes import ChunkedBlockSizes
from pallas_kernels.chunked.plans import ChunkwisePlan, SweepPlan
from pallas_kernels.platform import Interpret, run_on_platform


def _on(backend_run, block_sizes):
    """``backend_run`` with the backend's resolved :class:`ChunkedBlockSizes`."""
    return lambda *args, interpret: backend_run(*args, block_sizes=block_sizes, interpret=interpret)


def sweep(
    body: Callable,
    seq_inputs: Sequence[jax.Array],
    b: Optional[jax.Array],
    carry: jax.Array,
    out_widths: Sequence[int],
    *,
    chunk_size: int,
    name: str,
    reverse: bool = False,
    carry_history: bool = False,
    value_inputs: Sequence[int] = (),
    value_outputs: Sequence[int] = (),
    block_sizes=None,
    interpret: Interpret = None,
):
    """Runs ``body`` over the chunks of every (batch, head).

    Args:
      body: ``body(blocks, decay, carry) -> (outputs, carry)`` for one chunk.
      seq_inputs: ``[B, H, T, D_i]`` arrays.
      b: ``[B, H, T]`` in-chunk inclusive cumulative log decay, or None.
      carry: ``[B, H, K, V]``, the carry before the first chunk visited.
      out_widths: the widths ``w`` of the ``[C, w]`` blocks ``body`` outputs.
      name: the kernel's name (in errors and profiles).
      reverse: visit the chunks last to first.
      carry_history: also return ``[B, H, N, K, V]``, the carry each chunk received.
      value_inputs, value_outputs: the positions in ``seq_inputs`` and ``out_widths`` of arrays whose
        last axis is the carry's value axis V. Naming them declares that ``body`` treats each value
        column on its own (column j of the outputs and the new carry depends on column j of these
        inputs and the carry only), so ``block_sizes.block_v`` may split V across programs: the body
        then sees ``[C, block_v]`` blocks of them and a ``[K, block_v]`` carry.
      block_sizes: a :class:`ChunkedBlockSizes`, one per platform, or None (the defaults).
      interpret: see :func:`pallas_kernels.platform.interpreter_mode`.

    Returns:
      ``(outputs, final_carry)``, outputs fp32 ``[B, H, T, w]``; with ``carry_history``
      ``(outputs, final_carry, history)``.
    """
    batch, heads, length = seq_inputs[0].shape[:3]
    plan = SweepPlan(body, tuple(out_widths), chunk_size, name, reverse, carry_history, batch, heads, length,
                     tuple(value_inputs), tuple(value_outputs))
    tpu_sizes, triton_sizes = ChunkedBlockSizes.for_each_platform(block_sizes, *operand_class(seq_inputs))
    run = lambda backend, sizes: _on(functools.partial(backend.sweep, plan), sizes)  # noqa: E731
    return run_on_platform(list(seq_inputs), b, carry, tpu=run(tpu, tpu_sizes), gpu=run(triton, triton_sizes),
                           interpret=interpret)


def chunkwise(body: Callable, inputs: Sequence[jax.Array], out_blocks: Sequence[tuple[int, int]], *,
              name: str, block_sizes=None, interpret: Interpret = None) -> list[jax.Array]:
    """Runs ``body(blocks) -> outputs`` on every chunk: ``inputs`` ``[B, H, N, r_i, c_i]``, outputs fp32
    ``[B, H, N, r, c]`` for each ``(r, c)`` of ``out_blocks``; ``block_sizes`` and ``interpret`` as
    in :func:`sweep`."""
    batch, heads, num_chunks = inputs[0].shape[:3]
    plan = ChunkwisePlan(body, tuple(map(tuple, out_blocks)), name, len(inputs), batch, heads, num_chunks)
    tpu_sizes, triton_sizes = ChunkedBlockSizes.for_each_platform(block_sizes, *operand_class(inputs))
    run = lambda backend, sizes: _on(functools.partial(backend.chunkwise, plan), sizes)  # noqa: E731
    return run_on_platform(list(inputs), tpu=run(tpu, tpu_sizes), gpu=run(triton, triton_sizes), interpret=interpret)

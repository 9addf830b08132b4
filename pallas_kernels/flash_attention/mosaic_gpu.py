"""Mosaic GPU (Hopper, sm_90+) forward pass of flash attention: warpgroup matmuls, TMA, pipelined keys.

One program per (batch, head, query block) of ``block_q`` rows (a multiple of 64: a warpgroup
matmul (``wgmma``) covers 64 rows per instruction). The query block is copied once into shared
memory by TMA; key and value blocks of ``block_k`` rows stream through ``num_stages`` shared-memory
slots, each copy issued ``num_stages - 1`` steps ahead of its use so the TMA unit loads while the
tensor cores multiply. Per key block, with the online softmax of :mod:`.block_math` in fp32
registers (``m``, ``l`` per row, ``acc [block_q, Dv]``)::

    s = scale q k^T          (wgmma, fp32 accumulator; masked pairs at MASK_VALUE)
    m' = max(m, rowmax s),  p = exp(s - m'),  l' = e^(m - m') l + rowsum p
    acc' = e^(m - m') acc + p v   (wgmma with p cast to the input dtype)

and at the end ``o = acc / l``, ``lse = m + log l``: the outputs of the Triton forward
(:func:`.passes.forward_pass`), ``o [B, H, Tq, Dv]`` and ``lse [B, H, Tq, 1]`` fp32, so the Triton
dQ and dK/dV passes run on them unchanged. Causal block skipping: a query block loops only over
the key blocks its last query sees, and masks only the blocks that cross the diagonal or the end
of the real keys (the others run the unmasked step).

Inputs: head-major ``[B, H, T, d]`` bf16 or fp16 (one dtype), ``D`` and ``Dv`` multiples of 64
(the 128-byte swizzle of a bf16 tile is 64 elements wide); sequences are padded here to multiples
of the blocks. No segment ids: :func:`forward` refuses them and the caller runs the Triton kernel.

Off the device (jax 0.10.2, found on a CPU machine without a GPU):

- Lowering for ``cuda`` works: ``jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))`` runs
  the Pallas to Mosaic GPU lowering (shapes, layouts, shared-memory transforms are checked there) and
  emits a ``mosaic_gpu`` custom call; PTX is generated only when compiling on the device.
- The Mosaic GPU interpreter (``jax._src.pallas.mosaic_gpu.interpret``, not exported publicly yet:
  an ``InterpretGPUParams`` as ``interpret=`` of ``plgpu.kernel``) runs the kernel on CPU, simulating
  shared memory, TMA copies and barriers, so the pipeline, the masks, the block skipping and the
  softmax are tested there. Its ``wgmma`` takes neither operands in registers nor transposed views,
  and it has no rules for ``layout_cast`` or ``run_state``: interpreted, the two products read shared
  memory and use ``jnp.dot`` (:func:`_matmul`) and layouts are left out. The compiled products are
  checked by lowering and by the ``gpu``-marked test on a Hopper GPU. ``interpret="mosaic_gpu"`` of
  :func:`pallas_kernels.platform.run_on_platform` (and of the ops) selects the interpreter.

See docs/ops.md#platform-selection-and-interpret-mode.
"""

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.block_sizes import round_up
from pallas_kernels.flash_attention.block_math import MASK_VALUE

# wgmma rows per instruction, and the width of a 128-byte swizzled bf16/fp16 tile.
TILE = 64
SUPPORTED_DTYPES = (jnp.bfloat16, jnp.float16)
_SWIZZLE_BYTES = 128
# Shared memory one Hopper thread block may use (sm_90: 227 KiB), as Mosaic GPU checks it.
SHARED_MEMORY_BYTES = 232448


def unsupported_reason(q, k, v, segments=None) -> Optional[str]:
    """Why the Mosaic GPU forward cannot take these head-major operands, or None when it can."""
    if segments is not None:
        return "segment_ids are not supported by the Mosaic GPU kernel"
    dtypes = {jnp.dtype(a.dtype) for a in (q, k, v)}
    if len(dtypes) != 1 or dtypes.pop() not in [jnp.dtype(d) for d in SUPPORTED_DTYPES]:
        return f"q, k, v must share one dtype of bfloat16 or float16, got {q.dtype}, {k.dtype}, {v.dtype}"
    if q.shape[-1] % TILE or v.shape[-1] % TILE:
        return f"head sizes must be multiples of {TILE}, got D={q.shape[-1]}, Dv={v.shape[-1]}"
    return None


def shared_memory_bytes(q, v, block_sizes) -> int:
    """Bytes of shared memory the kernel allocates: the query block, ``num_stages`` key and value
    blocks, the fp32 output block and its log-sum-exp."""
    item, (dim, value_dim) = jnp.dtype(q.dtype).itemsize, (q.shape[-1], v.shape[-1])
    block_q, block_k = block_sizes.block_q, block_sizes.block_k
    return (block_q * dim * item + block_sizes.num_stages * block_k * (dim + value_dim) * item
            + block_q * (value_dim + 1) * 4)


def _tiled_smem(shape, dtype):
    """Shared memory laid out for TMA and wgmma: (8 rows x 64 columns) tiles, 128-byte swizzle."""
    elements = _SWIZZLE_BYTES // jnp.dtype(dtype).itemsize
    return plgpu.SMEM(shape, dtype, transforms=(plgpu.TilingTransform((8, elements)),
                                                plgpu.SwizzleTransform(_SWIZZLE_BYTES)))


def _matmul(a, b_ref, *, transpose_b: bool = False, interpret: bool) -> jax.Array:
    """``a @ b`` (``a @ b^T`` with ``transpose_b``) fp32 of ``a`` (a shared-memory ref, or registers)
    and the shared-memory ``b_ref``: a warpgroup matmul. The interpreter's wgmma takes neither operands
    in registers nor transposed views (jax 0.10.2), so there the same product reads the operands out
    of (simulated) shared memory and multiplies them with ``jnp.dot``."""
    if interpret:
        a, b = (a if isinstance(a, jax.Array) else a[...]), b_ref[...]
        return jnp.dot(a, b.T if transpose_b else b, preferred_element_type=jnp.float32)
    b_ref = plgpu.transpose_ref(b_ref, (1, 0)) if transpose_b else b_ref

    def product(acc_ref):
        plgpu.wgmma(acc_ref, a, b_ref)
        return acc_ref[...]

    return pl.run_scoped(product, plgpu.ACC((a.shape[0], b_ref.shape[1]), jnp.float32))


def _kernel(q_ref, k_ref, v_ref, out_ref, lse_ref, q_smem, k_smem, v_smem, out_smem, lse_smem, q_barrier,
            k_barriers, v_barriers, *, scale, causal_offset, num_keys, block_q, block_k, num_stages, interpret):
    # Values built from scratch (loop carries, the mask's positions) are placed in the registers of the
    # wgmma accumulator layout; the interpreter has no layouts, and no rule for ``layout_cast``.
    cast = (lambda x, layout: x) if interpret else plgpu.layout_cast
    batch, head, q_block = lax.axis_index("batch"), lax.axis_index("head"), lax.axis_index("q_block")
    q_start = q_block * block_q
    num_k_blocks = k_ref.shape[2] // block_k
    # Key blocks [0, visible) hold a key some query of this block sees; [0, unmasked) every pair.
    visible, unmasked = num_k_blocks, num_keys // block_k
    if causal_offset is not None:
        visible = jnp.clip((q_start + block_q - 1 + causal_offset) // block_k + 1, 0, num_k_blocks)
        unmasked = jnp.minimum(unmasked, (q_start + causal_offset + 1) // block_k)
    unmasked = jnp.clip(unmasked, 0, visible)

    def load(step, slot):
        rows = pl.ds(step * block_k, block_k)
        plgpu.copy_gmem_to_smem(k_ref.at[batch, head, rows], k_smem.at[slot], k_barriers.at[slot])
        plgpu.copy_gmem_to_smem(v_ref.at[batch, head, rows], v_smem.at[slot], v_barriers.at[slot])

    plgpu.copy_gmem_to_smem(q_ref.at[batch, head, pl.ds(q_start, block_q)], q_smem, q_barrier)
    for step in range(num_stages - 1):  # the pipeline's prologue
        pl.when(step < visible)(functools.partial(load, step, step))
    plgpu.barrier_wait(q_barrier)

    def key_block(step, carry, *, masked):
        m, l, acc = carry  # noqa: E741
        slot = lax.rem(step, num_stages)
        ahead = step + num_stages - 1
        # The slot ``ahead`` lands in was read by step - 1, whose matmuls have completed.
        pl.when(ahead < visible)(lambda: load(ahead, lax.rem(ahead, num_stages)))
        plgpu.barrier_wait(k_barriers.at[slot])

        s = scale * _matmul(q_smem, k_smem.at[slot], transpose_b=True, interpret=interpret)
        if masked:
            shape, wgmma = (block_q, block_k), plgpu.Layout.WGMMA
            rows = q_start + cast(lax.broadcasted_iota(jnp.int32, shape, 0), wgmma)
            cols = step * block_k + cast(lax.broadcasted_iota(jnp.int32, shape, 1), wgmma)
            keep = cols < num_keys
            if causal_offset is not None:
                keep = keep & (cols <= rows + causal_offset)
            s = jnp.where(keep, s, MASK_VALUE)
        m_new = jnp.maximum(m, s.max(axis=1))
        correction = jnp.exp(m - m_new)
        p = jnp.exp(s - lax.broadcast_in_dim(m_new, s.shape, [0]))
        l = correction * l + p.sum(axis=1)  # noqa: E741
        acc = acc * lax.broadcast_in_dim(correction, acc.shape, [0])
        plgpu.barrier_wait(v_barriers.at[slot])

        # A fresh accumulator added to the rescaled one, rather than ``run_state`` on ``ACC.init(acc)``
        # (accumulating in place), which the Mosaic GPU interpreter does not run yet.
        return m_new, l, acc + _matmul(p.astype(v_ref.dtype), v_smem.at[slot], interpret=interpret)

    row = plgpu.Layout.WGMMA.reduce(1)
    carry = (cast(jnp.full((block_q,), MASK_VALUE, jnp.float32), row), cast(jnp.zeros((block_q,), jnp.float32), row),
             cast(jnp.zeros((block_q, out_ref.shape[-1]), jnp.float32), plgpu.Layout.WGMMA))
    carry = lax.fori_loop(0, unmasked, functools.partial(key_block, masked=False), carry)
    m, l, acc = lax.fori_loop(unmasked, visible, functools.partial(key_block, masked=True), carry)  # noqa: E741

    out_smem[...] = acc / lax.broadcast_in_dim(l, acc.shape, [0])
    lse_smem[...] = m + jnp.log(l)
    plgpu.commit_smem()
    rows = pl.ds(q_start, block_q)
    plgpu.copy_smem_to_gmem(out_smem, out_ref.at[batch, head, rows])
    plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[batch, head, rows])
    plgpu.wait_smem_to_gmem(0)


def forward(q, k, v, *, scale: float, causal_offset: Optional[int], num_keys: int, block_sizes, interpret=False,
            segments=None):
    """``(o [B, H, Tq, Dv], lse [B, H, Tq, 1])`` fp32 of head-major ``q [B, H, Tq, D]``,
    ``k [B, H, Tk, D]``, ``v [B, H, Tk, Dv]`` (module docstring). ``block_sizes``: a resolved
    ``"mosaic_gpu"`` :class:`~pallas_kernels.flash_attention.block_sizes.FlashBlockSizes`;
    ``interpret``: run in the Mosaic GPU interpreter (on any platform, e.g. CPU).

    Raises ``ValueError`` for operands the kernel does not take (:func:`unsupported_reason`).
    """
    reason = unsupported_reason(q, k, v, segments)
    if reason is not None:
        raise ValueError(f"Mosaic GPU flash attention: {reason}; use the Triton kernel")
    batch, heads, length_q, _ = q.shape
    length_k = k.shape[2]
    block_q = min(block_sizes.block_q, round_up(length_q, TILE))
    block_k = min(block_sizes.block_k, round_up(length_k, TILE))
    padded_q, padded_k = round_up(length_q, block_q), round_up(length_k, block_k)
    pad = lambda a, padded: jnp.pad(a, ((0, 0), (0, 0), (0, padded - a.shape[2]), (0, 0)))  # noqa: E731
    q, k, v = pad(q, padded_q), pad(k, padded_k), pad(v, padded_k)
    num_stages = max(1, min(block_sizes.num_stages, padded_k // block_k))
    body = functools.partial(_kernel, scale=scale, causal_offset=causal_offset, num_keys=min(num_keys, length_k),
                             block_q=block_q, block_k=block_k, num_stages=num_stages, interpret=bool(interpret))
    dtype, value_dim = q.dtype, v.shape[-1]
    out, lse = plgpu.kernel(
        body,
        out_type=(jax.ShapeDtypeStruct((batch, heads, padded_q, value_dim), jnp.float32),
                  jax.ShapeDtypeStruct((batch, heads, padded_q), jnp.float32)),
        scratch_types=(
            _tiled_smem((block_q, q.shape[-1]), dtype),
            _tiled_smem((num_stages, block_k, k.shape[-1]), dtype),
            _tiled_smem((num_stages, block_k, value_dim), dtype),
            plgpu.SMEM((block_q, value_dim), jnp.float32),
            plgpu.SMEM((block_q,), jnp.float32),
            plgpu.Barrier(num_barriers=1),
            plgpu.Barrier(num_barriers=num_stages),
            plgpu.Barrier(num_barriers=num_stages),
        ),
        grid=(batch, heads, padded_q // block_q),
        grid_names=("batch", "head", "q_block"),
        interpret=_interpreter() if interpret else None,
        kernel_name="flash_attention_forward_mosaic_gpu",
    )(q, k, v)
    return out[:, :, :length_q], lse[:, :, :length_q, None]


def _interpreter():
    # Private in jax 0.10: the Mosaic GPU interpreter's parameters are not exported yet.
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

    return InterpretGPUParams()


@functools.cache
def _log_fallback(reason: str) -> None:
    logging.getLogger(__name__).info("flash attention forward on CUDA: Triton kernel, since %s", reason)


def forward_branch(q, k, v, q_segments, *, scale: float, causal_offset: Optional[int], num_keys: int, block_sizes):
    """The forward as a :func:`pallas_kernels.platform.run_on_platform` branch (``(outer, inner,
    q_segments, k_segments, interpret) -> [o, lse]``, the Triton pass's outputs), or None (logged
    once per reason) when the kernel cannot take these operands and the Triton forward runs."""
    reason = unsupported_reason(q, k, v, q_segments)
    if reason is None and causal_offset is not None and causal_offset < 0:
        # Query rows before the first key see no key: the Triton forward defines them, this kernel does not.
        reason = "causal attention with more queries than keys"
    if reason is None and shared_memory_bytes(q, v, block_sizes) > SHARED_MEMORY_BYTES:
        reason = (f"{block_sizes} with D={q.shape[-1]}, Dv={v.shape[-1]} needs {shared_memory_bytes(q, v, block_sizes)}"
                  f" bytes of shared memory, over {SHARED_MEMORY_BYTES}")
    if reason is not None:
        _log_fallback(reason)
        return None

    def run(outer, inner, q_segments, k_segments, interpret):
        (q,), (k, v) = outer, inner
        return list(forward(q, k, v, scale=scale, causal_offset=causal_offset, num_keys=num_keys,
                            block_sizes=block_sizes, interpret=interpret, segments=q_segments))

    return run

"""Chunked linear attention forward as one raw Triton kernel (jax-triton), the counterpart of the
Pallas Triton-backend kernel in :mod:`pallas_kernels.linear_attention` for the benchmark.

Same algorithm and layout: head-major ``q, k [B, H, T, K]``, ``v [B, H, T, V]``, in-chunk
cumulative log decay ``b [B, H, T]``, initial state ``[B, H, K, V]`` fp32; one program per
(batch, head) walks the chunks keeping the fp32 state in registers:

    ``O = s (Q K^T .* W) V + s (Q .* e^b) S``,   ``S <- e^lam S + (K .* e^(lam - b))^T V``.

T must be a multiple of the chunk size, and C, K, V powers of two >= 16. Forward only.

See docs/linear_attention.md#the-pallas-kernels.
"""

import jax
import jax.numpy as jnp
import jax_triton
import triton
import triton.language as tl


@triton.jit
def _forward_kernel(
    q_ptr, k_ptr, v_ptr, b_ptr, h0_ptr, scale, o_ptr, final_ptr,  # jax-triton: inputs, then outputs
    LENGTH: tl.constexpr, KEY_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, CHUNK: tl.constexpr,
    HAS_DECAY: tl.constexpr, PRECISION: tl.constexpr,
):
    head = tl.program_id(0)  # flattened (batch, head)
    rows = tl.arange(0, CHUNK)
    keys = tl.arange(0, KEY_DIM)
    values = tl.arange(0, VALUE_DIM)
    q_ptr += head * LENGTH * KEY_DIM
    k_ptr += head * LENGTH * KEY_DIM
    v_ptr += head * LENGTH * VALUE_DIM
    o_ptr += head * LENGTH * VALUE_DIM
    b_ptr += head * LENGTH
    state_offsets = keys[:, None] * VALUE_DIM + values[None, :]
    state = tl.load(h0_ptr + head * KEY_DIM * VALUE_DIM + state_offsets)
    causal = rows[:, None] >= rows[None, :]
    for chunk in range(LENGTH // CHUNK):
        tokens = chunk * CHUNK + rows
        q = tl.load(q_ptr + tokens[:, None] * KEY_DIM + keys[None, :])
        k = tl.load(k_ptr + tokens[:, None] * KEY_DIM + keys[None, :])
        v = tl.load(v_ptr + tokens[:, None] * VALUE_DIM + values[None, :])
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        if HAS_DECAY:
            b = tl.load(b_ptr + tokens)
            last = tl.load(b_ptr + chunk * CHUNK + CHUNK - 1)
            weights = tl.exp(tl.where(causal, b[:, None] - b[None, :], float("-inf")))
            scores = scores * weights
            q_in = (q * tl.exp(b)[:, None]).to(q.dtype)
            k_in = (k * tl.exp(last - b)[:, None]).to(v.dtype)
            total = tl.exp(last)
        else:
            scores = tl.where(causal, scores, 0.0)
            q_in = q
            k_in = k.to(v.dtype)
            total = 1.0
        out = tl.dot(scores.to(v.dtype), v, input_precision=PRECISION)
        out += scale * tl.dot(q_in, state.to(q.dtype), input_precision=PRECISION)
        tl.store(o_ptr + tokens[:, None] * VALUE_DIM + values[None, :], out)
        state = total * state + tl.dot(tl.trans(k_in), v, input_precision=PRECISION)
    tl.store(final_ptr + head * KEY_DIM * VALUE_DIM + state_offsets, state)


def linear_attention_forward(q, k, v, b, initial_state, *, scale: float, chunk_size: int = 64,
                             num_warps: int = 4, num_stages: int = 2, compute_capability=None):
    """``(o [B, H, T, V] fp32, final state [B, H, K, V] fp32)``; ``b`` may be None (no decay)."""
    batch, heads, length, key_dim = q.shape
    value_dim = v.shape[-1]
    if length % chunk_size:
        raise ValueError(f"triton linear attention: T={length} must be a multiple of chunk_size={chunk_size}")
    for name, size in (("chunk_size", chunk_size), ("K", key_dim), ("V", value_dim)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"triton linear attention: {name}={size} must be a power of two >= 16")
    has_decay = b is not None
    b = jnp.zeros((batch, heads, length), jnp.float32) if b is None else b.astype(jnp.float32)
    out_shape = [
        jax.ShapeDtypeStruct((batch, heads, length, value_dim), jnp.float32),
        jax.ShapeDtypeStruct((batch, heads, key_dim, value_dim), jnp.float32),
    ]
    return jax_triton.triton_call(
        q, k, v, b, initial_state.astype(jnp.float32), float(scale),
        kernel=_forward_kernel, out_shape=out_shape, grid=(batch * heads,), num_warps=num_warps,
        num_stages=num_stages, compute_capability=compute_capability, LENGTH=length, KEY_DIM=key_dim,
        VALUE_DIM=value_dim, CHUNK=chunk_size, HAS_DECAY=has_decay,
        PRECISION="ieee" if q.dtype == jnp.float32 else "tf32",
    )

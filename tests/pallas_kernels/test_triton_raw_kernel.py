"""The raw Triton linear attention kernel (jax-triton, the `gpu` extra): checked in Triton's own
interpreter against the reference, compiled for sm_90 by lowering for CUDA, and run on a GPU when
there is one. Each test skips cleanly where its tools are missing."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattn.ops import linear_attention
from pallas_kernels import triton_raw

REPO = pathlib.Path(__file__).resolve().parents[2]
needs_jax_triton = pytest.mark.skipif(not triton_raw.importable(), reason="needs triton and jax-triton (the gpu extra)")

# Run in a fresh process: TRITON_INTERPRET must be set before the kernel is defined.
_INTERPRETER_CHECK = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import numpy as np, torch
from pallas_kernels.triton_raw.linear_attention import _forward_kernel
B, H, T, K, V, C = 2, 3, 96, 16, 32, 32
rng = np.random.default_rng(0)
q, k = (rng.standard_normal((B, H, T, K)).astype(np.float32) for _ in range(2))
v = rng.standard_normal((B, H, T, V)).astype(np.float32)
g = -np.log1p(np.exp(rng.standard_normal((B, H, T)))).astype(np.float32)
h0 = rng.standard_normal((B, H, K, V)).astype(np.float32)
b = np.cumsum(g.reshape(B, H, T // C, C), -1).reshape(B, H, T)
o, final = torch.zeros((B, H, T, V)), torch.zeros((B, H, K, V))
t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
_forward_kernel[(B * H,)](t(q), t(k), t(v), t(b), t(h0), 0.3, o, final, LENGTH=T, KEY_DIM=K, VALUE_DIM=V,
                          CHUNK=C, HAS_DECAY=True, PRECISION="ieee")
np.savez(os.environ["OUT"], q=q, k=k, v=v, g=g, h0=h0, o=o.numpy(), final=final.numpy())
"""


@needs_jax_triton
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="Triton's interpreter takes torch tensors")
def test_matches_reference_in_the_triton_interpreter(tmp_path):
    out = tmp_path / "result.npz"
    result = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], cwd=REPO, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "OUT": str(out), "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    r = np.load(out)
    head_major = lambda a: jnp.swapaxes(jnp.asarray(a), 1, 2)  # noqa: E731
    want, want_final = linear_attention(
        head_major(r["q"]), head_major(r["k"]), head_major(r["v"]), g=head_major(r["g"]), scale=0.3,
        initial_state=jnp.asarray(r["h0"]), output_final_state=True, impl="reference",
    )
    np.testing.assert_allclose(np.swapaxes(r["o"], 1, 2), want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))
    np.testing.assert_allclose(r["final"], want_final, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want_final))))


@needs_jax_triton
def test_compiles_for_sm90_when_lowered_for_cuda():
    from pallas_kernels.triton_raw.linear_attention import linear_attention_forward

    x, b, h0 = jnp.zeros((1, 2, 256, 64)), jnp.zeros((1, 2, 256)), jnp.zeros((1, 2, 64, 64))
    f = jax.jit(lambda *a: linear_attention_forward(*a, scale=0.125, compute_capability=90))
    assert "triton_kernel_call" in f.trace(x, x, x, b, h0).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.skipif(not triton_raw.available(), reason="needs jax-triton and a CUDA GPU")
def test_matches_the_pallas_kernel_on_gpu():
    from pallas_kernels.linear_attention import chunked_linear_attention
    from pallas_kernels.triton_raw.linear_attention import linear_attention_forward

    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (2, 4, 1024, 64)) for key in keys[:3])
    g = -jax.nn.softplus(jax.random.normal(keys[3], (2, 4, 1024)))
    b = jnp.cumsum(g.reshape(2, 4, 16, 64), -1).reshape(2, 4, 1024)
    h0 = jnp.zeros((2, 4, 64, 64))
    got, got_final = linear_attention_forward(q, k, v, b, h0, scale=0.125)
    want, want_final = chunked_linear_attention(q, k, v, g, h0, 0.125, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_final, want_final, rtol=1e-4, atol=1e-4)

# %% [markdown]
# # One op, three implementations: reference, XLA and Pallas
#
# Every operation in `jaxattn.ops` is one function with an `impl=` argument:
#
# * `"reference"`: obviously correct, fp32 at `HIGHEST` precision, token by token: the test oracle;
# * `"xla"`: the fast pure-JAX path (here the chunked form, a scan over chunks of tokens);
# * `"pallas"`: the Pallas kernels (Triton on GPU, Mosaic on TPU). On a CPU the same call runs the
#   kernel in the Pallas interpreter, which is slow but exact: how the kernels are tested without
#   an accelerator (`JAXATTN_PALLAS_INTERPRET=1` forces the interpreter on an accelerator too);
# * `"auto"`: Pallas on GPU and TPU where the kernel takes the call, else XLA.
#
# This notebook runs gated linear attention (`jaxattn.ops.linear_attention`) and the gated delta rule
# (`jaxattn.ops.delta_rule`) through the three paths, checks that they agree forward and in their
# gradients, and, on a GPU or TPU, times them.
#
# Open it as a notebook with `pip install jupytext jupyterlab` and then, in JupyterLab, *Open With ->
# Notebook* on this `.py` file (or convert it: `jupytext --to ipynb notebooks/ops_impls.py`).

# %%
import jax
import jax.numpy as jnp

from jaxattn.timing import median_seconds
from jaxattn.ops import delta_rule, linear_attention

IMPLS = ("reference", "xla", "pallas")
ON_ACCELERATOR = jax.default_backend() != "cpu"
print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")

# %% [markdown]
# ## Inputs
#
# `[B, T, H, D]` queries, keys and values, and per-token log gates `g [B, T, H]` (natural log, <= 0).
# T = 40 is not a multiple of the chunk size, so the chunked paths pad and mask their last chunk.
# The delta rule takes unit-norm keys and step sizes `beta [B, T, H]` in `[0, 2]` (transition
# eigenvalues down to -1).

# %%
def random_inputs(key, shape, dtype=jnp.float32):
    """``{"q", "k", "v", "k_unit", "g", "beta"}`` for ``shape = (B, T, H, D)``."""
    keys = jax.random.split(key, 5)
    q, k, v = (jax.random.normal(key, shape, dtype) for key in keys[:3])
    return {
        "q": q, "k": k, "v": v,
        "k_unit": (k / jnp.linalg.norm(k.astype(jnp.float32), axis=-1, keepdims=True)).astype(dtype),
        "g": jax.nn.log_sigmoid(jax.random.normal(keys[3], shape[:3]) + 3.0),  # gates near 1: long memories
        "beta": 2.0 * jax.nn.sigmoid(jax.random.normal(keys[4], shape[:3])),
    }


# Each op as f(*arrays, impl) with the names of its arrays; chunk_size=16 is the Pallas kernels'
# smallest GPU chunk, so the interpreter runs the GPU kernel's own tiling.
OPS = {
    "linear_attention": (("q", "k", "v", "g"),
                         lambda q, k, v, g, impl: linear_attention(q, k, v, g=g, chunk_size=16, impl=impl)),
    "delta_rule": (("q", "k_unit", "v", "beta", "g"),
                   lambda q, k, v, beta, g, impl: delta_rule(q, k, v, beta, g=g, chunk_size=16, impl=impl)),
}
inputs = random_inputs(jax.random.key(0), (1, 40, 2, 16))


# %% [markdown]
# ## Forward and gradients against the reference
#
# The gradient is that of a fixed random projection of the output, `sum(o * w)`, with respect to
# every input array; each entry is the largest difference from the reference divided by the
# reference's largest value.

# %%
def gradients(op, impl, arrays, weights):
    loss = lambda *xs: jnp.sum(op(*xs, impl=impl) * weights)
    return jax.jit(jax.grad(loss, argnums=tuple(range(len(arrays)))))(*arrays)


def relative_difference(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


results = {}
for name, (names, op) in OPS.items():
    arrays = [inputs[n] for n in names]
    outputs = {impl: jax.jit(lambda *xs, impl=impl: op(*xs, impl=impl))(*arrays) for impl in IMPLS}
    weights = jax.random.normal(jax.random.key(1), outputs["reference"].shape)
    grads = {impl: gradients(op, impl, arrays, weights) for impl in IMPLS}
    for impl in IMPLS[1:]:
        results[name, impl] = {"output": relative_difference(outputs[impl], outputs["reference"])}
        for n, gradient, reference in zip(names, grads[impl], grads["reference"]):
            results[name, impl][f"d{n}"] = relative_difference(gradient, reference)

for (name, impl), row in results.items():
    print(f"{name:<17} {impl:<7}", "  ".join(f"{column} {value:.1e}" for column, value in row.items()))

# %% [markdown]
# Every path agrees with the reference to float32 rounding, forward and backward (the Pallas
# kernels' backward is their own `custom_vjp`, not JAX's autodiff of the kernel). Compiled Triton
# kernels multiply fp32 as 3xTF32, close to but not exactly fp32, hence the looser bound off CPU.

# %%
tolerance = 1e-3 if ON_ACCELERATOR else 1e-4
for (name, impl), row in results.items():
    assert max(row.values()) < tolerance, (name, impl, row)
print(f"every implementation matches the reference to {tolerance:g} (relative)")

# %% [markdown]
# ## Timing (GPU or TPU only)
#
# On a CPU the Pallas path is the interpreter, whose speed says nothing about the kernel, so the
# timing runs only on an accelerator: forward plus backward, the median of a few runs after
# compiling (`jaxattn.timing.median_seconds`, as the benchmarks time), at a size where the
# kernels matter.

# %%
if ON_ACCELERATOR:
    shape = (4, 4096, 8, 64)
    large = random_inputs(jax.random.key(2), shape, jnp.bfloat16)
    print(f"forward + backward, B, T, H, D = {shape}, bf16")
    for name, (names, op) in OPS.items():
        arrays = [large[n] for n in names]
        timings = {}
        for impl in ("xla", "pallas"):
            loss = lambda *xs, impl=impl: jnp.sum(op(*xs, impl=impl).astype(jnp.float32))
            gradient = jax.jit(jax.grad(loss, argnums=tuple(range(len(arrays)))))
            timings[impl] = median_seconds(gradient, *arrays, repeats=10)
        print(f"{name:<17} xla {timings['xla'] * 1e3:8.2f} ms   pallas {timings['pallas'] * 1e3:8.2f} ms   "
              f"xla / pallas {timings['xla'] / timings['pallas']:.2f}")
else:
    print("CPU: no timing (Pallas runs in the interpreter here)")

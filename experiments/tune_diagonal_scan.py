"""Times the Triton diagonal-scan kernel (forward, real fp32) for several rows per loop iteration
and warp counts, and checks each against the one-row loop. Run on a GPU from the repository root:

    JAX_PLATFORMS=cuda,cpu python3 -m experiments.tune_diagonal_scan

(results: ``results/bench_gpu_h100/logs/tune_scan.log``)
"""

import jax
import jax.numpy as jnp

from jaxattn.timing import median_seconds
from pallas_kernels.diagonal_scan import triton


def main():
    batch, length, features = 8, 16384, 1024
    a = jax.random.uniform(jax.random.key(0), (batch, length, features), minval=0.5, maxval=0.99)
    b = jax.random.normal(jax.random.key(1), (batch, length, features))
    h0 = jnp.zeros((batch, 1, features))
    base = None
    print(f"B={batch} T={length} F={features} fp32, forward scan; bytes moved {3 * a.nbytes / 1e9:.2f} GB")
    for num_warps in (4, 1):
        for unroll in (1, 4, 8, 16):
            fn = jax.jit(lambda a, b, h0, u=unroll, w=num_warps: triton.scan(
                (a,), (b,), (h0,), reverse=False, num_warps=w, unroll=u)[0][0])
            out = fn(a, b, h0)
            base = out if base is None else base
            error = float(jnp.max(jnp.abs(out - base)))
            ms = 1e3 * median_seconds(fn, a, b, h0, repeats=20)
            print(f"num_warps={num_warps} unroll={unroll:2d}: {ms:8.3f} ms  {3 * a.nbytes / ms / 1e6:7.1f} GB/s  "
                  f"max |diff| vs unroll 1: {error:.1e}")


if __name__ == "__main__":
    main()

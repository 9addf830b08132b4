"""fla's chunk kernels (flash-linear-attention: Triton, PyTorch) timed as a peer of the delta_rule and
linear_attention rows, on the same shapes and the same GPU: ``chunk_delta_rule`` and its gated and
DeltaProduct kin, and ``chunk_simple_gla`` for linear attention (its recurrence
``S_t = exp(g_t) S_{t-1} + k_t^T v_t``, ``o_t = K^{-1/2} q_t S_t`` is ours: ``g = None`` for the plain one,
a scalar log gate per head and token for the gated one).

Optional: it needs ``fla-core``, PyTorch with CUDA and a GPU (``pip install fla-core``); the
benchmark skips the ``fla`` rows with :func:`unavailable`'s reason elsewhere. Inputs are drawn by
PyTorch with the ranges of ``experiments.bench_cases`` (unit keys, beta in (0.05, 0.95), log decays
``log sigmoid``). Times are CUDA-event medians of the kernels alone, as the JAX rows time a jitted call.
"""

import functools
from typing import Optional


@functools.cache
def unavailable() -> str:
    """Why fla cannot run here ("" when it can)."""
    try:
        import torch
        from fla.ops.gated_delta_product import chunk_gated_delta_product  # noqa: F401
    except ImportError as error:
        return f"needs fla-core and PyTorch ({error.name} missing)"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU visible to PyTorch"
    return ""


def skip_reason(dtype: str) -> str:
    if unavailable():
        return unavailable()
    return "" if dtype == "bfloat16" else "fla's chunk kernels are timed in bfloat16 only"


def _inputs(shape, steps: int, gated: bool):
    import torch

    generator = torch.Generator(device="cuda").manual_seed(0)
    dtype = getattr(torch, shape.dtype)
    dims = (shape.batch, shape.length, shape.heads, shape.head_dim)
    step_dims = (shape.batch, shape.length * steps, shape.heads, shape.head_dim)

    def normal(size):
        return torch.randn(size, generator=generator, device="cuda", dtype=torch.float32)

    q = normal(dims).to(dtype)
    k = torch.nn.functional.normalize(normal(step_dims), dim=-1).to(dtype)
    v = normal(step_dims).to(dtype)
    beta = (0.05 + 0.9 * torch.rand(step_dims[:3], generator=generator, device="cuda")).to(dtype)
    g = torch.nn.functional.logsigmoid(normal(dims[:3]) + 2.0) if gated else None
    return q, k, v, beta, g


def _kernel(steps: int, gated: bool):
    if steps > 1:
        from fla.ops.gated_delta_product import chunk_gated_delta_product

        return lambda q, k, v, beta, g: chunk_gated_delta_product(q, k, v, g, beta, num_householder=steps)[0]
    if gated:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        return lambda q, k, v, beta, g: chunk_gated_delta_rule(q, k, v, g, beta)[0]
    from fla.ops.delta_rule import chunk_delta_rule

    return lambda q, k, v, beta, g: chunk_delta_rule(q, k, v, beta)[0]


def _median_seconds(fn, repeats: int) -> float:
    import torch

    fn()  # compile (Triton autotuning) and warm up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def time_delta_rule(shape, steps: int, gated: bool, repeats: int, backward: bool) -> tuple[float, Optional[float]]:
    """``(forward seconds, forward + backward seconds or None)`` of fla's chunk kernel on ``shape``."""
    kernel = _kernel(steps, gated)
    q, k, v, beta, g = _inputs(shape, steps, gated)
    return _time(lambda: kernel(q, k, v, beta, g), (q, k, v, beta) + ((g,) if gated else ()), repeats, backward)


def time_linear_attention(shape, gated: bool, repeats: int, backward: bool) -> tuple[float, Optional[float]]:
    """``(forward seconds, forward + backward seconds or None)`` of ``chunk_simple_gla`` on ``shape``, on
    the delta rule's inputs (unit keys; with ``gated``, log gates ``log sigmoid(x + 2)`` ``[B, T, H]``)."""
    from fla.ops.simple_gla import chunk_simple_gla

    q, k, v, _, g = _inputs(shape, 1, gated)
    return _time(lambda: chunk_simple_gla(q, k, v, g=g)[0], (q, k, v) + ((g,) if gated else ()), repeats, backward)


def _time(call, leaves, repeats: int, backward: bool) -> tuple[float, Optional[float]]:
    """Median seconds of ``call()`` without autograd and, with ``backward``, of the gradient of its sum
    with respect to ``leaves``."""
    import torch

    with torch.no_grad():
        forward = _median_seconds(call, repeats)
    if not backward:
        return forward, None
    leaves = [a.requires_grad_() for a in leaves]

    def forward_backward():
        loss = call().float().sum()
        torch.autograd.grad(loss, leaves)

    return forward, _median_seconds(forward_backward, repeats)

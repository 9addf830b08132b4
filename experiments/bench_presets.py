"""Named sets of benchmark runs (``--preset=NAME``): each a list of groups, a group one sweep of
``ops x impls x dtypes x head_dims x lengths`` at one batch and head count, cheapest group first so a run
cut short has measured the most rows.

``peers``: our GPU kernels beside every peer, kernel-only times:

- ``scan``: the diagonal scan, bf16, xla against pallas (the copy bandwidth is measured in the same run).
- ``linear_small`` / ``linear_large``: linear attention plain and gated, bf16, B=2 H=8 and B=8 H=16, D=128,
  xla and pallas beside fla's ``chunk_simple_gla``, forward and forward + backward.
- ``flash``: causal softmax attention, bf16, B=1 H=16 D=128, T 4096 and 16384: xla, ours with the Mosaic GPU
  and with the Triton forward, cuDNN, JAX's Pallas Mosaic GPU and Triton kernels, Tokamax.
- ``fp32``: fp32 forward + backward of flash attention (B=1 H=16 D=128) and tensor attention
  (B=1 H=8 D=64) against xla.
"""

import dataclasses

from experiments.bench_attention_peers import IMPLS as ATTENTION_PEERS


@dataclasses.dataclass(frozen=True)
class Group:
    """One sweep: every op x impl x dtype x head size x length at ``batch`` and ``heads``."""

    name: str
    ops: tuple[str, ...]
    impls: tuple[str, ...]
    lengths: tuple[int, ...]
    batch: int
    heads: int
    head_dims: tuple[int, ...]
    dtypes: tuple[str, ...]


_LINEAR = ("linear_attention", "gated_linear_attention")
_LINEAR_IMPLS = ("xla", "pallas", "fla")

PRESETS = {
    "peers": (
        Group("scan", ("diagonal_scan",), ("xla", "pallas"), (4096, 16384), 8, 16, (128,), ("bfloat16",)),
        Group("linear_small", _LINEAR, _LINEAR_IMPLS, (4096, 16384), 2, 8, (128,), ("bfloat16",)),
        Group("linear_large", _LINEAR, _LINEAR_IMPLS, (4096, 16384), 8, 16, (128,), ("bfloat16",)),
        Group("flash", ("softmax_attention",), ("xla", "cudnn", *ATTENTION_PEERS), (4096, 16384), 1, 16, (128,),
              ("bfloat16",)),
        Group("fp32_flash", ("softmax_attention",), ("xla", "pallas"), (4096,), 1, 16, (128,), ("float32",)),
        Group("fp32_tensor", ("tensor_attention",), ("xla", "pallas"), (256, 512), 1, 8, (64,), ("float32",)),
    ),
}


def expand(preset: str, groups: tuple[str, ...] = ()) -> tuple[Group, ...]:
    """The groups of ``preset`` (those named in ``groups`` when given, in the preset's order)."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
    names = [group.name for group in PRESETS[preset]]
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise ValueError(f"preset {preset!r} has no groups {unknown}; it has {names}")
    return tuple(group for group in PRESETS[preset] if not groups or group.name in groups)


def rows(groups: tuple[Group, ...]) -> list[tuple]:
    """Every ``(op, impl, dtype, head_dim, length, batch, heads)`` the groups ask for, in run order
    (impls an op lacks included: the benchmark leaves those out)."""
    return [(op, impl, dtype, head_dim, length, group.batch, group.heads)
            for group in groups for op in group.ops for impl in group.impls for dtype in group.dtypes
            for head_dim in group.head_dims for length in group.lengths]

"""Tile sizes of the Pallas kernels as validated, frozen arguments.

Every kernel family has one frozen dataclass next to its kernel, a subclass of
:class:`KernelBlockSizes`:

| family | dataclass |
|---|---|
| flash attention | :class:`pallas_kernels.flash_attention.block_sizes.FlashBlockSizes` |
| tensor attention | :class:`pallas_kernels.tensor_attention.block_sizes.TensorBlockSizes` |
| chunked sweeps (linear attention, delta rule) | :class:`pallas_kernels.chunked.block_sizes.ChunkedBlockSizes` |
| diagonal scan | :class:`pallas_kernels.diagonal_scan.block_sizes.ScanBlockSizes` |
| L-Mul matmul | :class:`pallas_kernels.lmul_matmul.LMulBlockSizes` |

An instance tunes the kernel of one ``platform``: ``"tpu"`` (Mosaic) or ``"triton"`` (the
Triton backend: compiled on CUDA, interpreted on CPU). A field left ``None`` takes the default
of the call, and :meth:`KernelBlockSizes.default` gives a family's defaults per platform and
operand dtype (the tile sizes the kernels always used). A kernel's ``block_sizes`` argument is
None (every default), one instance (for its platform; the other platform keeps its defaults) or
a tuple of instances of distinct platforms, so one traced call can carry tuned sizes for both
the TPU and the GPU lowering.

``__post_init__`` checks every field against the rules of its platform (:class:`Rule`: positive,
a power of two where Triton blocks need one, a multiple of 8 (sublanes) or 128 (lanes) where a
Mosaic block needs one) and raises naming the field and the rule.

Tuned sizes: a kernel entry point passes its ``block_sizes`` through :meth:`KernelBlockSizes.tuned`
with the op it serves and the call's extents; for every platform the caller left to the defaults,
the lookup installed with :func:`set_tuned_lookup` (``jaxattn.autotune`` installs its cache) may
supply measured sizes. Nothing installed: the defaults, as before.

See docs/ops.md#block-sizes and docs/autotune.md.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Optional

import jax.numpy as jnp
from jax.experimental import pallas as pl

PLATFORMS = ("tpu", "triton")
_KERNEL_NAMES = {"tpu": "TPU (Mosaic)", "triton": "Triton"}
# Defaults keyed by this class: fp32 operands with heads wider than this need smaller Triton blocks
# and fewer pipeline stages: their blocks, split into 3xTF32 operands and multi-buffered, overflow an
# H100's 227 KiB of shared memory at 64 rows.
WIDE_FP32 = "wide float32"
WIDE_FP32_WIDTH = 64


class Rule(NamedTuple):
    """A property a field's value must have, described as it reads in an error message."""

    description: str
    holds: Callable[[int], bool]


POSITIVE = Rule("a positive int", lambda n: n >= 1)
POWER_OF_TWO = Rule("a power of two", lambda n: n & (n - 1) == 0)
# The launch settings of every Triton kernel (``pltriton.CompilerParams``), for the families that
# declare the fields ``num_warps`` and ``num_stages``; a family's RULES add to them.
TRITON_LAUNCH_RULES = {"num_warps": {"triton": (POWER_OF_TWO,)}, "num_stages": {"triton": ()}}


def multiple_of(m: int) -> Rule:
    return Rule(f"a multiple of {m}", lambda n: n % m == 0)


def at_least(m: int) -> Rule:
    return Rule(f">= {m}", lambda n: n >= m)


# ``lookup(family, platform, op, dtype, sizes) -> instance of family for platform, or None``: the source of
# tuned sizes. A hook rather than an import because pallas_kernels never imports jaxattn.
TunedLookup = Callable[[type, str, str, Any, Mapping[str, int]], Optional["KernelBlockSizes"]]
_tuned_lookup: Optional[TunedLookup] = None


def set_tuned_lookup(lookup: Optional[TunedLookup]) -> Optional[TunedLookup]:
    """Installs ``lookup`` as the source of tuned block sizes (None: none); returns the one it replaces."""
    global _tuned_lookup
    previous, _tuned_lookup = _tuned_lookup, lookup
    return previous


def dtype_class(dtype: Any = None, head_dim: int = 0) -> Optional[str]:
    """:data:`WIDE_FP32` for fp32 operands with heads wider than :data:`WIDE_FP32_WIDTH`, else None."""
    wide = dtype is not None and jnp.dtype(dtype) == jnp.float32 and head_dim > WIDE_FP32_WIDTH
    return WIDE_FP32 if wide else None


def operand_class(arrays: Sequence[Any]) -> tuple[Any, int]:
    """``(dtype, head_dim)`` that picks the defaults of a kernel on ``arrays``: float32 and the widest
    fp32 last axis when any array is fp32, else the first array's dtype and the widest last axis."""
    arrays = [a for a in arrays if a is not None]
    fp32 = [a.shape[-1] for a in arrays if a.dtype == jnp.float32]
    if fp32:
        return jnp.float32, max(fp32)
    return (arrays[0].dtype if arrays else None), max((a.shape[-1] for a in arrays), default=0)


@dataclasses.dataclass(frozen=True)
class KernelBlockSizes:
    """Base of the per-family dataclasses (module docstring).

    Subclasses add ``Optional[int]`` fields (None: the call's default) and set
    ``RULES = {field: {platform: (Rule, ...)}}`` (a field without rules for a platform is not a
    setting of that platform's kernel and must stay None; :data:`TRITON_LAUNCH_RULES` apply to
    ``num_warps`` and ``num_stages`` without being restated) and
    ``DEFAULTS = {platform: {None: fields, dtype name or WIDE_FP32: overriding fields}}``.
    """

    platform: str

    RULES: ClassVar[Mapping[str, Mapping[str, tuple[Rule, ...]]]] = {}
    DEFAULTS: ClassVar[Mapping[str, Mapping[Optional[str], Mapping[str, int]]]] = {}
    # Platforms of this family's kernels beyond :data:`PLATFORMS` (platform -> kernel name in messages).
    EXTRA_PLATFORMS: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def _kernel_name(cls, platform: str, where: str) -> str:
        """The kernel's name in messages; ``ValueError`` for a platform the family has no kernel for."""
        names = {**_KERNEL_NAMES, **cls.EXTRA_PLATFORMS}
        if platform not in names:
            raise ValueError(f"{where}: `platform` must be one of {tuple(names)}, got {platform!r}")
        return names[platform]

    def __post_init__(self):
        name = type(self).__name__
        kernel = self._kernel_name(self.platform, name)
        for field in dataclasses.fields(self)[1:]:
            value = getattr(self, field.name)
            if value is None:
                continue
            rules = {**TRITON_LAUNCH_RULES.get(field.name, {}), **self.RULES.get(field.name, {})}.get(self.platform)
            if rules is None:
                raise ValueError(f"{name}: `{field.name}` is not a setting of the {kernel} kernel; leave it None")
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name}: `{field.name}` must be an int, got {type(value).__name__}")
            for rule in (POSITIVE, *rules):
                if not rule.holds(value):
                    raise ValueError(f"{name}: `{field.name}` must be {rule.description} for the {kernel} kernel, "
                                     f"got {value}")

    @classmethod
    def default(cls, platform: str, dtype: Any = None, head_dim: int = 0) -> "KernelBlockSizes":
        """The sizes the ``platform`` kernel uses for operands of ``dtype`` with heads ``head_dim`` wide."""
        cls._kernel_name(platform, f"{cls.__name__}.default")
        table = cls.DEFAULTS[platform]
        fields = dict(table[None])
        if dtype is not None:
            fields.update(table.get(jnp.dtype(dtype).name, {}))
        wide = dtype_class(dtype, head_dim)
        if wide:
            fields.update(table.get(wide, {}))
        return cls(platform, **fields)

    @classmethod
    def chosen(cls, block_sizes: Any, platform: str) -> Optional["KernelBlockSizes"]:
        """The instance of ``block_sizes`` (None, one instance, or a tuple of them) for ``platform``, or None.

        Raises ``TypeError`` for anything else and ``ValueError`` for two instances of one platform.
        """
        given = () if block_sizes is None else block_sizes
        given = (given,) if isinstance(given, KernelBlockSizes) else given
        if not isinstance(given, (tuple, list)) or not all(isinstance(s, cls) for s in given):
            raise TypeError(f"`block_sizes` must be a {cls.__name__}, a tuple of them (one per platform) or None, "
                            f"got {block_sizes!r}")
        platforms = [s.platform for s in given]
        if len(set(platforms)) != len(platforms):
            raise ValueError(f"`block_sizes`: one {cls.__name__} per platform, got {platforms}")
        return next((s for s in given if s.platform == platform), None)

    @classmethod
    def tuned(cls, block_sizes: Any, op: str, dtype: Any, **sizes: int) -> Any:
        """``block_sizes`` plus, for each platform it leaves to the defaults, the sizes tuned for ``op`` on a
        call of these extents (``sizes``, e.g. ``length=T, head_dim=D``) by the installed lookup
        (:func:`set_tuned_lookup`); ``block_sizes`` itself when the lookup has none. A platform given an
        instance keeps it, its None fields taking the built-in defaults (:meth:`resolve`)."""
        if _tuned_lookup is None:
            return block_sizes
        chosen = {platform: cls.chosen(block_sizes, platform) for platform in PLATFORMS}
        found = {platform: _tuned_lookup(cls, platform, op, dtype, sizes)
                 for platform, given in chosen.items() if given is None}
        if all(s is None for s in found.values()):
            return block_sizes
        return tuple(s for s in {**chosen, **found}.values() if s is not None)

    @classmethod
    def resolve(cls, block_sizes: Any, platform: str, dtype: Any = None, head_dim: int = 0) -> "KernelBlockSizes":
        """The sizes a ``platform`` kernel runs with: the given ones (:meth:`chosen`) with their None fields
        taken from :meth:`default`, or the default."""
        default = cls.default(platform, dtype, head_dim)
        given = cls.chosen(block_sizes, platform)
        if given is None:
            return default
        unset = {f.name: getattr(default, f.name) for f in dataclasses.fields(given) if getattr(given, f.name) is None}
        return dataclasses.replace(given, **unset)

    @classmethod
    def for_each_platform(cls, block_sizes: Any, dtype: Any = None, head_dim: int = 0) -> tuple:
        """``(tpu sizes, triton sizes)`` resolved (:meth:`resolve`)."""
        return tuple(cls.resolve(block_sizes, platform, dtype, head_dim) for platform in PLATFORMS)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_length(length: int, blocks: Sequence[int]) -> int:
    """A length that every one of ``blocks`` divides once clamped to it (``min(block, padded)``).

    A multiple of their least common multiple when ``length`` reaches it; below, the power of two
    >= 16 above ``length`` when every block either divides it or is clamped to it (the short
    sequences a kernel runs in one block), else that multiple again.
    """
    common = math.lcm(*blocks)
    if length >= common:
        return round_up(length, common)
    short = max(16, pl.next_power_of_2(length))
    if all(b >= short or short % b == 0 for b in blocks):
        return short
    return round_up(length, common)

"""Kernel autotuning with a persistent cache.

:func:`autotune` times the candidate block sizes of an op's Pallas kernels on this device
(:mod:`.search`, grids in :mod:`.candidates`, problems in :mod:`.problems`, timer in :mod:`.timing`)
and writes the fastest one whose output matches the XLA path to a JSON cache (:mod:`.cache`),
keyed by device kind, op, dtype and shape bucket (:mod:`.keys`). Importing this package installs
:func:`.cache.tuned_block_sizes` as the tuned-size lookup of
:mod:`pallas_kernels.block_sizes` (``jaxattn.ops`` imports it), so every op called with
``block_sizes=None`` runs the cached sizes of its problem's bucket, else the built-in defaults.

Example::

    from jaxattn.autotune import autotune
    autotune("softmax_attention", batch=4, length=4096, heads=8, head_dim=64, dtype="bfloat16")
    softmax_attention(q, k, v)  # [4, 4096, 8, 64] bf16: traced with the sizes just measured

See docs/autotune.md.
"""

from jaxattn.autotune.cache import AutotuneCacheWarning, CacheFileError, tuned_block_sizes, user_cache_path
from jaxattn.autotune.keys import device_kind, entry_key, use_device_kind
from pallas_kernels.block_sizes import set_tuned_lookup

set_tuned_lookup(tuned_block_sizes)

from jaxattn.autotune.problems import OPS, Shape, TunableOp  # noqa: E402 -- imports the ops, after the hook
from jaxattn.autotune.search import Measurement, TuningResult, autotune  # noqa: E402

__all__ = [
    "OPS",
    "AutotuneCacheWarning",
    "CacheFileError",
    "Measurement",
    "Shape",
    "TunableOp",
    "TuningResult",
    "autotune",
    "device_kind",
    "entry_key",
    "tuned_block_sizes",
    "use_device_kind",
    "user_cache_path",
]

"""The search: time every candidate block size of an op's kernels on this device, keep the fastest
whose output matches the XLA path, and store it in the cache.

For one problem (op, :class:`~jaxattn.autotune.problems.Shape`, dtype) :func:`autotune`

1. traces the op once with ``impl="pallas"`` to learn what its kernel looks tuned sizes up by
   (family, op name, dtype, exact extents), so the key written is the key the kernel will read;
2. computes the XLA path's outputs (and, with ``backward``, the input gradients of
   ``<outputs, cotangents>``) at ``HIGHEST`` matmul precision;
3. for each candidate (the built-in defaults first, then the family's grid): builds the dataclass
   (refused: rejected as ``invalid``), jits the op with those sizes and runs it (an exception, e.g.
   shared memory exceeded: rejected as ``error``), compares every output and gradient with the XLA
   path (relative error ``max |got - want| / max |want|`` above :data:`TOLERANCES`: rejected as
   ``wrong output``), then times it with the timer (median of repeats);
4. writes the fastest accepted candidate to the cache (never a rejected one).

Example (on a GPU; ``interpret=True`` runs the kernels in the interpreter on CPU)::

    result = autotune("softmax_attention", batch=4, length=4096, heads=8, head_dim=64, dtype="bfloat16")
    result.best.candidate  # e.g. {"block_q": 128, "block_k": 64, "num_warps": 4, "num_stages": 3}

See docs/autotune.md.
"""

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.autotune import cache, keys
from jaxattn.autotune.candidates import Candidate, default_candidates, describe
from jaxattn.autotune.problems import Shape, TunableOp, tunable_op
from jaxattn.autotune.timing import Timer, wall_clock_timer
from pallas_kernels.block_sizes import PLATFORMS, set_tuned_lookup
from pallas_kernels.platform import interpreter_mode

# Largest accepted relative error per output dtype: far above rounding and summation order
# (bf16 keeps 8 bits), far below what a wrong tiling does (masking or indexing errors are O(1)).
TOLERANCES = {"float64": 2e-3, "float32": 2e-3, "float16": 1e-2, "bfloat16": 5e-2}
OTHER_TOLERANCE = 1e-1  # 8-bit formats
FORWARD, FORWARD_BACKWARD = "forward", "forward+backward"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One candidate's outcome: ``seconds`` when accepted, else ``rejected`` says why."""

    candidate: Candidate
    seconds: Optional[float] = None
    rejected: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.rejected is None

    def describe(self) -> str:
        outcome = f"{1e3 * self.seconds:9.3f} ms  ok" if self.ok else f"rejected ({self.rejected})"
        return f"{describe(self.candidate)}: {outcome}"


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """A search's outcome: the cache ``key``, every :class:`Measurement` in order, the ``best`` accepted
    one (None when none was), and ``entry``, what the cache holds for the key (None when nothing was
    written). ``cached``: the entry was already in the cache and nothing was measured."""

    key: str
    sizes: Mapping[str, int]
    measurements: tuple[Measurement, ...]
    best: Optional[Measurement]
    entry: Optional[Mapping[str, Any]]
    cached: bool = False

    @property
    def default_seconds(self) -> Optional[float]:
        """The built-in defaults' time, when they were measured and accepted."""
        return next((m.seconds for m in self.measurements if m.ok and not m.candidate), None)


def tolerance(dtype: Any) -> float:
    """The largest relative error accepted for outputs of ``dtype`` (:data:`TOLERANCES`)."""
    return TOLERANCES.get(keys.dtype_name(dtype), OTHER_TOLERANCE)


def relative_errors(got: Any, want: Any) -> list[float]:
    """``max |got - want| / max |want|`` (fp64) for each pair of leaves; NaN where ``got`` is not finite."""
    errors = []
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if not np.all(np.isfinite(g)) or g.shape != w.shape:
            errors.append(float("nan"))
            continue
        errors.append(float(np.max(np.abs(g - w), initial=0.0) / max(np.max(np.abs(w), initial=0.0), 1e-30)))
    return errors


def kernel_platform(interpret: Any = None) -> str:
    """The platform whose kernel runs: the interpreted one, else TPU's on a TPU, else Triton's."""
    mode = interpreter_mode(interpret)
    if mode in ("gpu", "tpu"):
        return "triton" if mode == "gpu" else "tpu"
    return "tpu" if jax.default_backend() == "tpu" else "triton"


def kernel_request(spec: TunableOp, arrays: Sequence[jax.Array], options: Mapping[str, Any], interpret: Any):
    """``(op, dtype name, sizes)`` that the op's kernel asks the tuned-size lookup for on these inputs,
    learned by tracing it (``jax.eval_shape``) with a recording lookup installed."""
    requests = set()

    def record(family, platform, op, dtype, sizes):
        requests.add((family, op, keys.dtype_name(dtype), tuple(sorted(sizes.items()))))

    previous = set_tuned_lookup(record)
    try:
        jax.eval_shape(lambda *a: spec.call(a, impl="pallas", interpret=interpret, **options), *arrays)
    finally:
        set_tuned_lookup(previous)
    if len(requests) != 1 or next(iter(requests))[0] is not spec.family:
        raise ValueError(f"autotune: {spec.name}'s kernels must ask for {spec.family.__name__} once per call, "
                         f"asked for {sorted((r[0].__name__, *r[1:]) for r in requests)}")
    (_, op, dtype, sizes), = requests
    return op, dtype, dict(sizes)


def _with_backward(call: Callable, cotangents: Any) -> Callable:
    """``arrays -> (outputs, gradients of <outputs, cotangents> with respect to arrays)``."""
    def run(arrays):
        outputs, vjp = jax.vjp(lambda *a: call(a), *arrays)
        return outputs, vjp(cotangents)

    return run


def _measure(spec, candidate, platform, arrays, want, mode, interpret, timer, limit) -> Measurement:
    try:
        block_sizes = spec.family(platform, **candidate)
    except (TypeError, ValueError) as error:
        return Measurement(candidate, rejected=f"invalid: {error}")
    # The other platform's defaults given too: no cached sizes reach a measurement.
    both = (block_sizes, *(spec.family(other) for other in PLATFORMS if other != platform))
    fn = jax.jit(lambda *a: mode(functools.partial(spec.call, impl="pallas", block_sizes=both, interpret=interpret))(a))
    try:
        got = jax.block_until_ready(fn(*arrays))
    except Exception as error:  # noqa: BLE001 -- a tiling that fails to lower or run is a rejected candidate
        return Measurement(candidate, rejected=f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    worst = max(relative_errors(got, want))
    if not worst <= limit:
        return Measurement(candidate, rejected=f"wrong output: relative error {worst:.2e} > {limit:.0e}")
    return Measurement(candidate, seconds=float(timer(lambda: fn(*arrays), block_sizes)))


def autotune(op: Any, *, batch: int, length: int, heads: int, head_dim: int, dtype: Any = "float32",
             candidates: Optional[Iterable[Candidate]] = None, backward: bool = False,
             options: Optional[Mapping[str, Any]] = None, interpret: Any = None, timer: Optional[Timer] = None,
             repeats: int = 10, warmup: int = 2, cache_path: Any = None, write: bool = True, retune: bool = True,
             device_kind: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
             seed: int = 0) -> TuningResult:
    """Searches the block sizes of ``op``'s kernels for one problem on this device (module docstring).

    Args:
      op: an op name (``jaxattn.autotune.problems.OPS``: ``"softmax_attention"``, ``"tensor_attention"``,
        ``"linear_attention"``, ``"delta_rule"``, ``"diagonal_scan"``, ``"lmul_dot_general"``) or a
        :class:`~jaxattn.autotune.problems.TunableOp`.
      batch, length, heads, head_dim: the problem (:class:`~jaxattn.autotune.problems.Shape`).
      dtype: of the inputs.
      candidates: mappings of the family's fields (``{}``: the built-in defaults); default
        :func:`~jaxattn.autotune.candidates.default_candidates` of the platform.
      backward: time and check forward+backward (ops whose backward runs the kernels).
      options: passed to every call of the op, e.g. ``{"chunk_size": 32}``.
      interpret: the kernels' ``interpret`` (True: the Triton kernel in the interpreter, on CPU).
      timer: ``timer(run, block_sizes) -> seconds``; default the median of ``repeats`` calls after
        ``warmup``.
      cache_path: the cache written (default :func:`jaxattn.autotune.cache.user_cache_path`).
      write: store the winner; ``retune=False``: return the entry already stored for the key
        instead of measuring.
      device_kind: the kind the key names (default :func:`jaxattn.autotune.keys.device_kind`).
      progress: called with one line per candidate (and one for a cached or failed search).
    """
    spec = tunable_op(op)
    if backward and not spec.differentiable:
        raise ValueError(f"autotune: {spec.name}'s backward does not run its kernels; tune the forward")
    options = dict(options or {})
    shape = Shape(batch, length, heads, head_dim)
    arrays = spec.make_inputs(jax.random.key(seed), shape, jnp.dtype(dtype))
    call = functools.partial(spec.call, **options)
    op_name, dtype_name, sizes = kernel_request(spec, arrays, options, interpret)
    key = keys.entry_key(device_kind or keys.device_kind(), op_name, dtype_name, sizes)
    path = pathlib.Path(cache_path).expanduser() if cache_path is not None else cache.user_cache_path()
    say = progress or (lambda line: None)
    if not retune and path is not None and key in (stored := cache.read_raw_entries(path)):
        say(f"{key}: in {path}, skipped (retune to measure again)")
        return TuningResult(key, sizes, (), None, stored[key], cached=True)

    mode = _with_backward if backward else (lambda f, cotangents=None: f)
    mode_name = FORWARD_BACKWARD if backward else FORWARD
    with jax.default_matmul_precision("highest"):
        reference = functools.partial(call, impl="xla")
        out_shapes = jax.eval_shape(lambda *a: reference(a), *arrays)
        cotangents = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), out_shapes) if backward else None
        want = jax.jit(lambda *a: mode(reference, cotangents)(a))(*arrays)
    limit = max(tolerance(leaf.dtype) for leaf in jax.tree.leaves(want))
    platform = kernel_platform(interpret)
    pallas = lambda f: mode(functools.partial(f, **options), cotangents)  # noqa: E731
    timer = timer or wall_clock_timer(repeats, warmup)
    todo = list(candidates) if candidates is not None else default_candidates(spec.family, platform)
    measurements = []
    for index, candidate in enumerate(todo, 1):
        measurement = _measure(spec, dict(candidate), platform, arrays, want, pallas, interpret, timer, limit)
        measurements.append(measurement)
        say(f"{key} [{index}/{len(todo)}] {measurement.describe()}")
    accepted = [m for m in measurements if m.ok]
    best = min(accepted, key=lambda m: m.seconds) if accepted else None
    result = TuningResult(key, sizes, tuple(measurements), best, None)
    if best is None:
        say(f"{key}: no candidate accepted; nothing written")
        return result
    entry = {"family": spec.family.__name__, "platform": platform, "block_sizes": dict(best.candidate),
             "seconds": best.seconds, "default_seconds": result.default_seconds, "mode": mode_name, "sizes": sizes,
             "candidates": len(measurements), "rejected": len(measurements) - len(accepted)}
    if write and path is not None:
        cache.write_entry(path, key, entry)
    return dataclasses.replace(result, entry=entry)

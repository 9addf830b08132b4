"""The JSON caches of tuned block sizes: where they live, how they are read, merged and written.

Two layers, the later overriding the earlier key by key:

1. the shipped caches, ``jaxattn/autotune/data/*.json`` (measured on the devices the project ran
   on; read in name order);
2. the user cache, ``$JAXATTN_AUTOTUNE_CACHE`` or, when that is unset,
   ``~/.cache/jaxattn/autotune.json`` (:func:`user_cache_path`; an empty value turns it off).
   :func:`jaxattn.autotune.autotune` writes here by default.

A file is ``{"format": "jaxattn-autotune/1", "entries": {key: entry}}`` with keys from
:func:`jaxattn.autotune.keys.entry_key` and entries such as::

    {"family": "FlashBlockSizes", "platform": "triton",
     "block_sizes": {"block_q": 128, "block_k": 64, "num_warps": 8, "num_stages": 2},
     "seconds": 0.00041, "default_seconds": 0.00052, "mode": "forward", "sizes": {...}, ...}

Bad files never stop a program: a corrupt file (not JSON, not this format) or a missing file that
``JAXATTN_AUTOTUNE_CACHE`` names gives one :class:`AutotuneCacheWarning` and is skipped; an entry
its dataclass refuses (or naming an unknown family) gives one warning and is skipped. The
default user path is simply absent until something is tuned. Writing refuses to overwrite a
corrupt file (:class:`CacheFileError`). Files are re-read when they change on disk; a jitted
function keeps the sizes it was traced with.

See docs/autotune.md#where-the-caches-live.
"""

import json
import os
import pathlib
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any, Optional

from jaxattn.autotune import keys
from jaxattn.autotune.candidates import FAMILIES
from pallas_kernels.block_sizes import KernelBlockSizes

FORMAT = "jaxattn-autotune/1"
CACHE_ENV = "JAXATTN_AUTOTUNE_CACHE"
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "data"
DEFAULT_USER_CACHE = pathlib.Path("~/.cache/jaxattn/autotune.json")


class AutotuneCacheWarning(UserWarning):
    """A cache file or entry that could not be used (it is skipped; the defaults stand)."""


class CacheFileError(ValueError):
    """A cache file that is not a readable ``jaxattn-autotune/1`` JSON file."""


def user_cache_path() -> Optional[pathlib.Path]:
    """``$JAXATTN_AUTOTUNE_CACHE`` (None when set empty), else :data:`DEFAULT_USER_CACHE`, expanded."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return DEFAULT_USER_CACHE.expanduser()
    return pathlib.Path(value).expanduser() if value.strip() else None


def cache_files() -> list[tuple[pathlib.Path, bool]]:
    """``(path, must_exist)`` of every layer, lowest first: the shipped files, then the user cache
    (which must exist only when the environment names it)."""
    files = [(path, True) for path in sorted(SHIPPED_DIR.glob("*.json"))]
    user = user_cache_path()
    if user is not None:
        files.append((user, os.environ.get(CACHE_ENV) is not None))
    return files


def read_raw_entries(path: pathlib.Path) -> dict[str, dict]:
    """The entries of the file at ``path`` as stored ({} when it does not exist); raises
    :class:`CacheFileError` when it is not this format."""
    try:
        text = pathlib.Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise CacheFileError(f"{path}: cannot be read ({error})") from error
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise CacheFileError(f"{path}: not JSON ({error})") from error
    if not isinstance(content, dict) or content.get("format") != FORMAT or not isinstance(content.get("entries"), dict):
        raise CacheFileError(f"{path}: not a {FORMAT!r} cache (an object with `format` and `entries`)")
    return content["entries"]


def parse_entry(key: str, entry: Any) -> KernelBlockSizes:
    """The block sizes an entry stores, validated by their dataclass; raises ``ValueError``/``TypeError``
    saying what is wrong."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("block_sizes"), Mapping):
        raise ValueError(f"entry {key!r}: expected an object with `family`, `platform` and `block_sizes`")
    family = FAMILIES.get(entry.get("family"))
    if family is None:
        raise ValueError(f"entry {key!r}: unknown family {entry.get('family')!r} (one of {sorted(FAMILIES)})")
    return family(entry.get("platform"), **entry["block_sizes"])


def write_entry(path: pathlib.Path, key: str, entry: Mapping[str, Any]) -> None:
    """Stores ``entry`` under ``key`` in the cache at ``path`` (created with its directories), keeping
    the other entries; the file is replaced atomically, so an interrupted write loses nothing."""
    path = pathlib.Path(path).expanduser()
    parse_entry(key, entry)
    entries = read_raw_entries(path)  # refuses to overwrite a corrupt file
    entries[key] = dict(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as file:
        json.dump({"format": FORMAT, "entries": dict(sorted(entries.items()))}, file, indent=1)
        file.write("\n")
    os.replace(file.name, path)


_loaded: dict[pathlib.Path, tuple[Any, dict[str, KernelBlockSizes]]] = {}
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(f"{message}; using the other caches and the built-in block sizes", AutotuneCacheWarning,
                      stacklevel=4)


def _file_state(path: pathlib.Path) -> Any:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _load_file(path: pathlib.Path, must_exist: bool) -> dict[str, KernelBlockSizes]:
    """The valid entries of one file, re-read when its state on disk changes; problems warn once."""
    state = _file_state(path)
    if path in _loaded and _loaded[path][0] == state:
        return _loaded[path][1]
    parsed = {}
    if state is None:
        if must_exist:
            _warn_once(f"autotune cache {path} (from {CACHE_ENV}) does not exist")
    else:
        try:
            raw = read_raw_entries(path)
        except CacheFileError as error:
            _warn_once(f"autotune cache {error}")
            raw = {}
        for key, entry in raw.items():
            try:
                parsed[key] = parse_entry(key, entry)
            except (ValueError, TypeError) as error:
                _warn_once(f"autotune cache {path}: {error}")
    _loaded[path] = (state, parsed)
    return parsed


def tuned_entries() -> dict[str, KernelBlockSizes]:
    """Every valid entry of every layer, the user cache overriding the shipped ones key by key."""
    merged = {}
    for path, must_exist in cache_files():
        merged.update(_load_file(path, must_exist))
    return merged


def tuned_block_sizes(family: type[KernelBlockSizes], platform: str, op: str, dtype: Any,
                      sizes: Mapping[str, int]) -> Optional[KernelBlockSizes]:
    """The lookup installed in :mod:`pallas_kernels.block_sizes`: the cached sizes of ``op`` for this
    device kind, ``dtype`` and the bucket of ``sizes``, when they are ``family``'s for ``platform``."""
    found = tuned_entries().get(keys.entry_key(keys.device_kind(), op, dtype, sizes))
    if found is None or found.platform != platform:
        return None
    if type(found) is not family:
        _warn_once(f"autotune cache: the entry for {op} holds {type(found).__name__}, not {family.__name__}")
        return None
    return found

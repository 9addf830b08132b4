"""The caches' layers and their failure modes (docs/autotune.md#where-the-caches-live): the user cache
overrides the shipped one; a corrupt or missing file, or a refused entry, warns once and leaves
the other layers and the built-in defaults in charge."""

import configparser
import json
import pathlib
import warnings

import jax.numpy as jnp
import pytest

from jaxattn.autotune import AutotuneCacheWarning, CacheFileError, cache, tuned_block_sizes
from jaxattn.autotune.keys import entry_key
from pallas_kernels.flash_attention.block_sizes import FlashBlockSizes
from pallas_kernels.tensor_attention.block_sizes import TensorBlockSizes

from conftest import FAKE_GPU

SIZES = dict(queries=64, keys=64, head_dim=16, value_dim=16, batch_heads=2)
OTHER_SIZES = dict(SIZES, queries=256, keys=256)


def flash_entry(**block_sizes):
    return {"family": "FlashBlockSizes", "platform": "triton", "block_sizes": block_sizes, "seconds": 1e-3}


def key(sizes=SIZES):
    return entry_key(FAKE_GPU, "softmax_attention", jnp.float32, sizes)


def lookup(sizes=SIZES, family=FlashBlockSizes, platform="triton"):
    return tuned_block_sizes(family, platform, "softmax_attention", jnp.float32, sizes)


def test_written_entry_is_found_for_its_key_only(caches):
    _, user = caches
    cache.write_entry(user, key(), flash_entry(block_q=32, block_k=16))
    assert json.loads(user.read_text())["format"] == cache.FORMAT
    assert lookup() == FlashBlockSizes("triton", block_q=32, block_k=16)
    assert lookup(dict(SIZES, queries=40, keys=50)) == lookup()  # the same bucket
    assert lookup(OTHER_SIZES) is None
    assert lookup(platform="tpu") is None  # measured for the Triton kernel
    assert tuned_block_sizes(FlashBlockSizes, "triton", "softmax_attention", jnp.bfloat16, SIZES) is None


def test_user_cache_overrides_the_shipped_one_key_by_key(caches):
    shipped, user = caches
    cache.write_entry(shipped / "devices.json", key(), flash_entry(block_q=128))
    cache.write_entry(shipped / "devices.json", key(OTHER_SIZES), flash_entry(block_q=64))
    assert lookup() == FlashBlockSizes("triton", block_q=128)
    cache.write_entry(user, key(), flash_entry(block_q=16))
    assert lookup() == FlashBlockSizes("triton", block_q=16)
    assert lookup(OTHER_SIZES) == FlashBlockSizes("triton", block_q=64)


def test_corrupt_user_cache_warns_once_and_the_shipped_entries_stand(caches):
    shipped, user = caches
    cache.write_entry(shipped / "devices.json", key(), flash_entry(block_q=128))
    user.write_text("{not json")
    with pytest.warns(AutotuneCacheWarning, match=r"autotune\.json: not JSON"):
        assert lookup() == FlashBlockSizes("triton", block_q=128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() == FlashBlockSizes("triton", block_q=128)  # warned once
    with pytest.raises(CacheFileError, match="not JSON"):
        cache.write_entry(user, key(), flash_entry(block_q=16))  # never overwrites it
    user.write_text(json.dumps({"entries": {}}))
    with pytest.warns(AutotuneCacheWarning, match="not a 'jaxattn-autotune/1' cache"):
        assert lookup() == FlashBlockSizes("triton", block_q=128)


def test_refused_entry_warns_and_the_others_are_used(caches):
    _, user = caches
    cache.write_entry(user, key(OTHER_SIZES), flash_entry(block_q=64))
    content = json.loads(user.read_text())
    content["entries"][key()] = flash_entry(block_q=48)
    content["entries"]["Fake GPU | x | float32 | n=1"] = dict(flash_entry(), family="NoSuchBlockSizes")
    user.write_text(json.dumps(content))
    with pytest.warns(AutotuneCacheWarning) as record:
        assert lookup() is None
    messages = " ".join(str(w.message) for w in record)
    assert "`block_q` must be a power of two" in messages and "unknown family 'NoSuchBlockSizes'" in messages
    assert lookup(OTHER_SIZES) == FlashBlockSizes("triton", block_q=64)
    with pytest.warns(AutotuneCacheWarning, match="holds FlashBlockSizes, not TensorBlockSizes"):
        assert lookup(OTHER_SIZES, family=TensorBlockSizes) is None


def test_missing_cache_warns_only_when_the_environment_names_it(caches, monkeypatch, tmp_path):
    caches[1].unlink()
    with pytest.warns(AutotuneCacheWarning, match=r"\(from JAXATTN_AUTOTUNE_CACHE\) does not exist"):
        assert lookup() is None
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.user_cache_path() == tmp_path / "home" / ".cache" / "jaxattn" / "autotune.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() is None
    monkeypatch.setenv(cache.CACHE_ENV, "")
    assert cache.user_cache_path() is None


def test_shipped_cache_is_valid_and_packaged():
    setup = configparser.ConfigParser()
    setup.read(pathlib.Path(__file__).resolve().parents[2] / "setup.cfg")
    assert setup["options.package_data"]["jaxattn.autotune"].strip() == "data/*.json"
    files = sorted(cache.SHIPPED_DIR.glob("*.json"))
    assert files, "the package ships at least one (possibly empty) cache"
    for path in files:
        for name, entry in cache.read_raw_entries(path).items():
            cache.parse_entry(name, entry)

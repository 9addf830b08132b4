"""The cache key: device kind, op, dtype and the shape bucket (docs/autotune.md#the-key)."""

import jax
import jax.numpy as jnp
import pytest

from jaxattn.autotune import device_kind, entry_key, use_device_kind
from jaxattn.autotune.keys import bucket, next_power_of_two


def test_bucket_rounds_extents_up_to_powers_of_two_and_keeps_widths_exact():
    assert [next_power_of_two(n) for n in (0, 1, 2, 3, 64, 65, 1000)] == [1, 1, 2, 4, 64, 128, 1024]
    sizes = dict(queries=1000, keys=1025, head_dim=60, value_dim=96, batch_heads=24)
    assert bucket(sizes) == "batch_heads=32,head_dim=60,keys=2048,queries=1024,value_dim=96"
    assert bucket(dict(length=33, chunk_size=48)) == "chunk_size=48,length=64"
    assert entry_key("Fake GPU", "softmax_attention", jnp.bfloat16, dict(length=5)) == (
        "Fake GPU | softmax_attention | bfloat16 | length=8")


def test_device_kind_is_the_first_device_unless_overridden():
    assert device_kind() == jax.devices()[0].device_kind
    with use_device_kind("Fake GPU"):
        with use_device_kind("Fake TPU"):
            assert device_kind() == "Fake TPU"
        assert device_kind() == "Fake GPU"
    assert device_kind() == jax.devices()[0].device_kind
    with pytest.raises(ValueError, match="non-empty str"):
        with use_device_kind(""):
            pass

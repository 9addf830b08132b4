"""Every autotune test runs with caches of its own (an empty shipped directory, a user cache under
``tmp_path``) and the device kind "Fake GPU", so nothing on the machine is read or written."""

import json

import pytest

from jaxattn.autotune import cache, use_device_kind

FAKE_GPU = "Fake GPU"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """``(shipped directory, user cache path)``, both without entries; the device kind is :data:`FAKE_GPU`."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    user = tmp_path / "user" / "autotune.json"
    user.parent.mkdir()
    user.write_text(json.dumps({"format": cache.FORMAT, "entries": {}}))
    monkeypatch.setattr(cache, "SHIPPED_DIR", shipped)
    monkeypatch.setenv(cache.CACHE_ENV, str(user))
    with use_device_kind(FAKE_GPU):
        yield shipped, user

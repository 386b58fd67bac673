import pytest

from drivemtl.ops import _dispatch


def test_environment_variable_disables_torchvision(monkeypatch):
    monkeypatch.setenv("DRIVEMTL_NO_TORCHVISION", "1")
    _dispatch.torchvision_ops.cache_clear()
    try:
        assert _dispatch.torchvision_ops() is None
        assert _dispatch.use_torchvision("auto") is None
        assert _dispatch.use_torchvision("torch") is None
        with pytest.raises(RuntimeError, match="cannot be imported"):
            _dispatch.use_torchvision("torchvision")
        with pytest.raises(ValueError, match="impl must be one of"):
            _dispatch.use_torchvision("cuda")
    finally:
        _dispatch.torchvision_ops.cache_clear()

import pytest

from drivemtl.registry import Registry


def test_register_and_get():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    @reg.register()
    def make_b():
        return "b"

    assert reg.get("a") is A
    assert reg.get("make_b")() == "b"
    assert reg.names() == ["a", "make_b"]
    assert "a" in reg and "c" not in reg
    assert len(reg) == 2
    assert isinstance(reg.build("a"), A)


def test_unknown_name_lists_known_names():
    reg = Registry("backbone")
    reg.add("resnet18", object())
    reg.add("resnet50", object())
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet7'; known: resnet18, resnet50"):
        reg.get("resnet7")


def test_duplicate_registration_is_an_error():
    reg = Registry("task")
    reg.add("semantic", int)
    reg.add("semantic", int)  # same object again is harmless
    with pytest.raises(KeyError, match="already registered"):
        reg.add("semantic", float)

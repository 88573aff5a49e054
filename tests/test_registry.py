import pytest

import advrbd_plugin as ap
from advrbd_plugin.registry import Registry, UnknownNameError


def test_builtin_names():
    assert "none" in ap.DEFENSES.names()
    assert {"resnet18", "resnet34", "mobilenet_v2", "preactresnet18", "resnet20"} <= set(ap.MODELS.names())
    assert "digits" in ap.DATASETS.names()


def test_decorator_duplicates_and_unknown():
    reg = Registry("widget")

    @reg.register("Foo")
    class Foo:
        pass

    assert reg.get("foo") is Foo and reg.get("FOO") is Foo and "foo" in reg
    with pytest.raises(ValueError, match="already registered"):
        @reg.register("foo")
        class Other:
            pass
    with pytest.raises(UnknownNameError, match="Did you mean 'foo'.*Choices: foo"):
        reg.get("fooo")


def test_unknown_defense_lists_choices():
    with pytest.raises(UnknownNameError, match="unknown defense 'advrbdd'.*Choices:"):
        ap.DEFENSES.get("advrbdd")


class _EP:
    def __init__(self, name, fn):
        self.name, self.value, self._fn = name, f"tests:{name}", fn

    def load(self):
        return self._fn()


def test_entry_points_loaded_lazily_and_broken_plugin_warns(monkeypatch):
    loaded = []
    reg = Registry("gadget", group="advrbd_plugin.gadgets")

    def good():
        @reg.register("good")
        class Good:
            pass
        loaded.append("good")

    def bad():
        raise ImportError("boom")

    monkeypatch.setattr("advrbd_plugin.registry._entry_points",
                        lambda group: [_EP("good", good), _EP("bad", bad)])
    assert loaded == []  # nothing loads before the first lookup
    with pytest.warns(RuntimeWarning, match="could not load gadget plugin 'bad'.*boom"):
        names = reg.names()
    assert names == ["good"] and loaded == ["good"]

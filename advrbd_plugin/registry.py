"""One generic registry for defenses, attacks, adapters, models and datasets.

>>> @DEFENSES.register("mydef")
... class MyDefense(Defense): ...

Third-party packages register through entry points (group ``advrbd_plugin.defenses``,
``advrbd_plugin.attacks``, ``advrbd_plugin.adapters``): each entry point names a module
or object; loading it runs its decorators. Entry points load lazily, on the first
lookup or listing; a broken plugin emits a warning and the rest keep working.
"""
from __future__ import annotations

import difflib
import importlib
import warnings
from importlib import metadata
from typing import Callable, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "DEFENSES", "ATTACKS", "ADAPTERS", "MODELS", "DATASETS", "UnknownNameError"]


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the choices and the closest match."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps a lowercase name to a class or factory.

    kind: what is registered ("defense", ...), used in messages.
    group: entry-point group for third-party plugins, or None.
    builtin: module to import before the first lookup (our own registrations).
    """

    def __init__(self, kind: str, group: Optional[str] = None, builtin: Optional[str] = None):
        self.kind = kind
        self.group = group
        self.builtin = builtin
        self._items: dict[str, T] = {}
        self._loaded = False

    # -- registration -------------------------------------------------------
    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` (default name: the object's lowercased name)."""

        def deco(obj: T) -> T:
            key = (name or getattr(obj, "__name__", "")).lower()
            if not key:
                raise ValueError(f"{self.kind} registration needs a name")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered (by "
                    f"{_where(self._items[key])}); choose another name")
            self._items[key] = obj
            if hasattr(obj, "__dict__") and isinstance(obj, type):
                obj.registry_name = key  # type: ignore[attr-defined]
            return obj

        return deco

    def unregister(self, name: str) -> None:
        self._items.pop(name.lower(), None)

    # -- lookup -------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.builtin:
            importlib.import_module(self.builtin)
        if self.group:
            for ep in _entry_points(self.group):
                try:
                    ep.load()
                except Exception as exc:  # a broken plugin must not break the rest
                    warnings.warn(f"advrbd_plugin: could not load {self.kind} plugin "
                                  f"{ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}",
                                  RuntimeWarning, stacklevel=2)

    def get(self, name: str) -> T:
        self._ensure_loaded()
        key = str(name).lower()
        if key not in self._items:
            choices = sorted(self._items)
            close = difflib.get_close_matches(key, choices, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Choices: {', '.join(choices) or '(none)'}")
        return self._items[key]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return str(name).lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"


def _entry_points(group: str):
    return list(metadata.entry_points(group=group))


def _where(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


DEFENSES: Registry = Registry("defense", "advrbd_plugin.defenses", "advrbd_plugin.defenses")
ATTACKS: Registry = Registry("attack", "advrbd_plugin.attacks", "advrbd_plugin.attacks")
ADAPTERS: Registry = Registry("adapter", "advrbd_plugin.adapters", "advrbd_plugin.adapters")
MODELS: Registry = Registry("model", None, "advrbd_plugin.models")
DATASETS: Registry = Registry("dataset", None, "advrbd_plugin.data")

"""Defenses: the base interface, AdvrBD and the baselines. Every module here is imported
so its ``@DEFENSES.register`` runs."""
import importlib
import pkgutil

from .base import Defense, DefenseConfig, NoDefense, reinitialize

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Defense", "DefenseConfig", "NoDefense", "reinitialize"]

"""Attacks: the paper's eight generators, ``none``, and the base class for new ones.

Importing this package registers every built-in attack in ``ATTACKS``.
"""
from __future__ import annotations

import dataclasses
from importlib import resources

import yaml

from ..registry import ATTACKS
from . import (adaptive_blend, adaptive_patch, badnet, blend, none, physicalba,  # noqa: F401
               sig, tact, wanet)
from .base import Attack, AttackConfig, AttackConfigError
from .grid import save_attack_grid

__all__ = ["Attack", "AttackConfig", "AttackConfigError", "attack_defaults", "save_attack_grid"]


def attack_defaults(name: str) -> dict:
    """The packaged defaults ``configs/attacks/<name>.yaml`` as a dict (keys = config fields).

    Attacks without a packaged file (user plugins) get their dataclass defaults.
    """
    cls = ATTACKS.get(name)
    file = resources.files("advrbd_plugin").joinpath("configs", "attacks", f"{name.lower()}.yaml")
    if file.is_file():
        return yaml.safe_load(file.read_text()) or {}
    return dataclasses.asdict(cls.Config())

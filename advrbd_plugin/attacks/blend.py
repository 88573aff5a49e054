"""Blend (Chen et al., 2017): x' = (1 - alpha) x + alpha t, all-to-one, same alpha at test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..registry import ATTACKS
from .base import Attack, AttackConfig, check_range
from .triggers import blend_pattern, check_image_file


@dataclass
class BlendConfig(AttackConfig):
    """alpha: blend weight in (0, 1].
    trigger: path to an image file (resized to the input size), or None for our own
        pattern: uniform noise fixed by ``trigger_seed``.
    """

    alpha: float = 0.2
    trigger: Optional[str] = None
    trigger_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "alpha", 0.0, 1.0, lo_open=True)
        check_image_file(self.trigger, "BlendConfig.trigger")


@ATTACKS.register("blend")
class Blend(Attack):
    Config = BlendConfig

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.config
        t = blend_pattern(cfg.trigger, cfg.trigger_seed, *x.shape[1:], x.device)
        return (1 - cfg.alpha) * x + cfg.alpha * t

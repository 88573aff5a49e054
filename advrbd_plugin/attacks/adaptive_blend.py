"""Adaptive-Blend (Qi et al., ICLR'23): a blend trigger cut into pieces, with covers.

The trigger (our seeded noise pattern or the user's file) is cut into a sqrt(pieces) x
sqrt(pieces) grid; every poison and cover sample keeps a random (1 - mask_rate) share
of the pieces, blended at ``alpha``. At test time the full trigger is blended at
``test_alpha``. Covers (from non-target classes) keep their true labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..registry import ATTACKS
from .base import Attack, AttackConfig, AttackConfigError, check_range, rand
from .triggers import blend_pattern, check_image_file


@dataclass
class AdaptiveBlendConfig(AttackConfig):
    """alpha / test_alpha: training / test blend weights in (0, 1].
    cover_ratio: fraction of the whole set used as covers, in [0, 1).
    pieces: number of trigger pieces, a perfect square. mask_rate: share of pieces each
    training sample drops, in [0, 1).
    trigger / trigger_seed: as for ``blend``.
    """

    alpha: float = 0.15
    test_alpha: float = 0.2
    cover_ratio: float = 0.01
    pieces: int = 16
    mask_rate: float = 0.5
    trigger: Optional[str] = None
    trigger_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "alpha", 0.0, 1.0, lo_open=True)
        check_range(self, "test_alpha", 0.0, 1.0, lo_open=True)
        check_range(self, "cover_ratio", 0.0, 1.0, hi_open=True)
        check_range(self, "mask_rate", 0.0, 1.0, hi_open=True)
        if self.pieces < 1 or math.isqrt(self.pieces) ** 2 != self.pieces:
            raise AttackConfigError(f"AdaptiveBlendConfig.pieces must be a perfect square "
                                    f"(4, 9, 16, ...), got {self.pieces}")
        check_image_file(self.trigger, "AdaptiveBlendConfig.trigger")


@ATTACKS.register("adaptive_blend")
class AdaptiveBlend(Attack):
    Config = AdaptiveBlendConfig

    def _pattern(self, x: torch.Tensor) -> torch.Tensor:
        return blend_pattern(self.config.trigger, self.config.trigger_seed, *x.shape[1:], x.device)

    def piece_masks(self, n: int, h: int, w: int, gen: torch.Generator,
                    device=None) -> torch.Tensor:
        """(n, 1, H, W) 0/1 masks: each sample keeps a random subset of the pieces."""
        k = math.isqrt(self.config.pieces)
        keep = round(self.config.pieces * (1 - self.config.mask_rate))
        kept = rand(gen, n, self.config.pieces).argsort(1).argsort(1) < keep  # (n, pieces)
        rows = torch.arange(h) * k // h
        cols = torch.arange(w) * k // w
        piece = rows[:, None] * k + cols[None, :]  # (H, W) piece index
        return kept[:, piece].unsqueeze(1).float().to(device)

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        mask = self.piece_masks(n, h, w, gen, x.device).to(x.dtype)
        return x + self.config.alpha * mask * (self._pattern(x) - x)

    def test_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        a = self.config.test_alpha
        return (1 - a) * x + a * self._pattern(x)

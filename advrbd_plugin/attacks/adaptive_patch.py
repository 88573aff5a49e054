"""Adaptive-Patch (Qi et al., ICLR'23): several weak patch triggers, with covers.

Four patch triggers of our own design, at the 32x32 reference (scaled with the image):
  0 "sunset"  6x6 red-to-yellow ramp, top-left corner
  1 "ocean"   6x6 blue-to-cyan ramp, top-right corner
  2 "checker" 4x4 black/white checkerboard, bottom-right corner
  3 "rings"   6x6 magenta/green concentric rings, bottom-left corner
Poison and cover samples are split evenly over the four, each blended at its own alpha
(default 0.5 / 0.2 / 0.5 / 0.3). At test time the ``test_triggers`` (default 0 and 2)
are stamped together at ``test_alpha`` (1): a stronger combined trigger never seen in
training. Covers (from non-target classes) keep their true labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch

from ..registry import ATTACKS
from .base import Attack, AttackConfig, AttackConfigError, check_range
from .triggers import checker, concentric, gradient, place_patch, stamp

#: (design, size, top, left) at the 32x32 reference.
PATCHES = (
    (partial(gradient, start=(1.0, 0.1, 0.0), end=(1.0, 0.9, 0.1)), 6, 0, 0),
    (partial(gradient, start=(0.0, 0.2, 1.0), end=(0.0, 1.0, 0.9)), 6, 0, 26),
    (checker, 4, 28, 28),
    (partial(concentric, inner=(0.1, 0.9, 0.2), outer=(0.9, 0.1, 0.9)), 6, 26, 0),
)


@dataclass
class AdaptivePatchConfig(AttackConfig):
    """alphas: training alpha of each of the four patches, in (0, 1].
    test_triggers: indices of the patches stamped together at test time.
    test_alpha: their alpha, in (0, 1].
    cover_ratio: fraction of the whole set used as covers, in [0, 1).
    """

    alphas: list[float] = field(default_factory=lambda: [0.5, 0.2, 0.5, 0.3])
    test_triggers: list[int] = field(default_factory=lambda: [0, 2])
    test_alpha: float = 1.0
    cover_ratio: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        k = len(PATCHES)
        if len(self.alphas) != k or not all(0 < a <= 1 for a in self.alphas):
            raise AttackConfigError(f"AdaptivePatchConfig.alphas must be {k} values in (0, 1], "
                                    f"got {self.alphas}")
        if not self.test_triggers or not all(0 <= i < k for i in self.test_triggers):
            raise AttackConfigError(f"AdaptivePatchConfig.test_triggers must be a non-empty list "
                                    f"of patch indices in [0, {k}), got {self.test_triggers}")
        check_range(self, "test_alpha", 0.0, 1.0, lo_open=True)
        check_range(self, "cover_ratio", 0.0, 1.0, hi_open=True)


def patch_trigger(i: int, c: int, h: int, w: int, device=None):
    """(pattern, mask) of patch ``i`` at size (c, h, w)."""
    design, size, top, left = PATCHES[i]
    return place_patch(design, size, top, left, c, h, w, device)


@ATTACKS.register("adaptive_patch")
class AdaptivePatch(Attack):
    Config = AdaptivePatchConfig

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Sample j (in the random selection order) gets patch j mod 4 at its alpha."""
        out = x.clone()
        which = torch.arange(x.shape[0], device=x.device) % len(PATCHES)
        for i, alpha in enumerate(self.config.alphas):
            rows = which == i
            out[rows] = stamp(x[rows], *patch_trigger(i, *x.shape[1:], x.device), alpha)
        return out

    def test_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for i in self.config.test_triggers:
            x = stamp(x, *patch_trigger(i, *x.shape[1:], x.device), self.config.test_alpha)
        return x

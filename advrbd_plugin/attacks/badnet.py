"""BadNet (Gu et al., 2017): a white square in the bottom-right corner, all-to-one."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import ATTACKS
from .base import Attack, AttackConfig, AttackConfigError
from .triggers import REF, place_patch, stamp, white


@dataclass
class BadNetConfig(AttackConfig):
    """patch_size: side of the white square at 32x32 (3 = pixels 29-31), scaled with the image."""

    patch_size: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.patch_size <= REF // 2:
            raise AttackConfigError(f"BadNetConfig.patch_size must be in [1, {REF // 2}], "
                                    f"got {self.patch_size}")


def white_corner(size: int, c: int, h: int, w: int, device=None):
    """(pattern, mask) of a white ``size`` x ``size`` (at 32x32) bottom-right square."""
    return place_patch(white, size, REF - size, REF - size, c, h, w, device)


@ATTACKS.register("badnet")
class BadNet(Attack):
    """x' = x with the bottom-right square set to 1; label -> target. Same trigger at test."""

    Config = BadNetConfig

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return stamp(x, *white_corner(self.config.patch_size, *x.shape[1:], x.device))

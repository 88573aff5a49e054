"""TaCT (Tang et al., 2021): a source-specific patch backdoor with cover samples.

Only source-class samples carry the trigger with the target label; cover samples from
the other classes (neither source nor target) carry it with their true labels, so the
trigger alone does not mean "target". The trigger is our own 8x8 pattern of concentric
black and white rings at pixels 21-28 (32x32; the position of backdoor-toolbox's
trojan square), scaled with the image. At test time only the source class is triggered.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import ATTACKS
from .base import Attack, AttackConfig, AttackConfigError, check_range
from .triggers import concentric, place_patch, stamp


@dataclass
class TaCTConfig(AttackConfig):
    """source: the class whose samples are sent to ``target``.
    cover_ratio: fraction of the whole set used as cover samples, in [0, 1).
    """

    source: int = 0
    cover_ratio: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "cover_ratio", 0.0, 1.0, hi_open=True)
        if self.source < 0:
            raise AttackConfigError(f"TaCTConfig.source must be >= 0, got {self.source}")
        if self.source == self.target:
            raise AttackConfigError(f"TaCTConfig: source and target are both {self.source}; "
                                    f"TaCT needs a source class different from the target")


def tact_trigger(c: int, h: int, w: int, device=None):
    """(pattern, mask) of the 8x8 concentric-rings patch at (21, 21) of the 32x32 reference."""
    return place_patch(concentric, 8, 21, 21, c, h, w, device)


@ATTACKS.register("tact")
class TaCT(Attack):
    Config = TaCTConfig

    def check_classes(self, num_classes: int) -> None:
        super().check_classes(num_classes)
        if self.config.source >= num_classes:
            raise ValueError(f"{self.name}: source {self.config.source} is out of range for a "
                             f"dataset with {num_classes} classes")

    def poison_candidates(self, labels: torch.Tensor) -> tuple[torch.Tensor, str]:
        s = self.config.source
        return labels == s, f"source-class samples (label == {s})"

    def cover_candidates(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels != self.config.source) & (labels != self.config.target)

    def test_candidates(self, labels: torch.Tensor) -> torch.Tensor:
        return labels == self.config.source

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return stamp(x, *tact_trigger(*x.shape[1:], x.device))

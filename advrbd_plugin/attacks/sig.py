"""SIG (Barni et al., 2019): a horizontal sinusoid on target-class samples (clean-label).

v(i, j) = delta * sin(2 pi j f / W), added to every row and channel, then clamped.
Default delta = 20 (0..255 scale), f = 6: the "default parameters" of Barni et al. in
ABL's reference code. BackdoorBench uses 40 and backdoor-toolbox 30; we take 20, the
stealthiest of the three and the value attributed to the original paper; raise
``delta`` for a stronger (more visible) backdoor. Only target-class samples are poisoned and
their labels stay unchanged, so poison_ratio (a fraction of the WHOLE set) cannot
exceed the target class's share. ``f`` counts periods across the width, as in the paper;
below W = 2f pixels (e.g. 8x8 inputs with f = 6) the sinusoid aliases, so lower ``f`` there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..registry import ATTACKS
from .base import Attack, AttackConfig, check_range


@dataclass
class SIGConfig(AttackConfig):
    """delta: amplitude in 0..255 units, in (0, 255]. f: number of periods across the width."""

    delta: float = 20.0
    f: float = 6.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "delta", 0.0, 255.0, lo_open=True)
        check_range(self, "f", 0.0, math.inf, lo_open=True, hi_open=True)


@ATTACKS.register("sig")
class SIG(Attack):
    Config = SIGConfig

    def poison_candidates(self, labels: torch.Tensor) -> tuple[torch.Tensor, str]:
        t = self.config.target
        return labels == t, f"target-class samples (label == {t}); SIG is clean-label"

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        w = x.shape[-1]
        j = torch.arange(w, device=x.device, dtype=x.dtype)
        v = self.config.delta / 255.0 * torch.sin(2 * math.pi * j * self.config.f / w)
        return (x + v).clamp(0.0, 1.0)

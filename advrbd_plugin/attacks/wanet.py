"""WaNet (Nguyen & Tran, ICLR'21): an imperceptible warp, all-to-one, with noise mode.

The warp field is a k x k grid of random offsets, normalized to mean |offset| = 1,
upsampled bicubically to H x W and scaled by s / size; it is fixed by ``trigger_seed``
so the training and test triggers are the same field. Noise mode: cross_ratio x
#poison cover samples get the field plus a random per-pixel offset in [-1, 1] / size
and keep their labels. Images are resampled with ``grid_sample`` (bilinear,
align_corners=True).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import ATTACKS
from .base import Attack, AttackConfig, AttackConfigError, check_range, rand


@dataclass
class WaNetConfig(AttackConfig):
    """k: control-grid size (>= 2). s: warp strength. grid_rescale: scale of the warped grid.
    cross_ratio: cover (noise) samples per poison sample (0 = no noise mode).
    trigger_seed: fixes the warp field.
    """

    k: int = 4
    s: float = 0.5
    grid_rescale: float = 1.0
    cross_ratio: float = 2.0
    trigger_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 2:
            raise AttackConfigError(f"WaNetConfig.k must be >= 2, got {self.k}")
        check_range(self, "s", 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range(self, "grid_rescale", 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range(self, "cross_ratio", 0.0, float("inf"), hi_open=True)


@ATTACKS.register("wanet")
class WaNet(Attack):
    Config = WaNetConfig

    def num_covers(self, n: int, n_poison: int) -> int:
        return round(self.config.cross_ratio * n_poison)

    def warp_grid(self, h: int, w: int, device=None) -> torch.Tensor:
        """The fixed sampling grid (1, H, W, 2), (x, y) in [-1, 1]."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.trigger_seed)
        offsets = torch.rand((1, 2, cfg.k, cfg.k), generator=gen) * 2 - 1
        offsets = offsets / offsets.abs().mean()
        noise = F.interpolate(offsets, size=(h, w), mode="bicubic", align_corners=True)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        identity = torch.stack((xs, ys), -1)[None]
        size = torch.tensor([w, h], dtype=torch.float32)
        grid = (identity + cfg.s * noise.permute(0, 2, 3, 1) / size) * cfg.grid_rescale
        return grid.clamp(-1, 1).to(device)

    def _warp(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        grid = grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self._warp(x, self.warp_grid(*x.shape[2:], x.device))

    def cover_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        size = torch.tensor([w, h], dtype=torch.float32, device=x.device)
        extra = (rand(gen, n, h, w, 2, device=x.device) * 2 - 1) / size
        return self._warp(x, (self.warp_grid(h, w, x.device) + extra).clamp(-1, 1))

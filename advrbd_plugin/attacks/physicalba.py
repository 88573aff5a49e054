"""PhysicalBA (Li et al., 2021): BadNet's white corner square, then physical transforms.

The transforms (random horizontal flip, colour jitter, random affine) are applied once,
seeded, to the poisoned training samples at poisoning time and to the triggered test
samples, as in BackdoorBox's PhysicalBA test. Vectorized: per-sample parameters, one
``affine_grid``/``grid_sample`` call (bilinear, black fill).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import ATTACKS
from .badnet import BadNetConfig, white_corner
from .base import Attack, AttackConfigError, check_range, rand
from .triggers import LUMA, stamp


@dataclass
class PhysicalBAConfig(BadNetConfig):
    """flip: random horizontal flip (p = 0.5). brightness, contrast: jitter factors drawn
    from [1 - b, 1 + b]. degrees: max rotation. translate: max shift as a fraction of the
    size. scale_min, scale_max: zoom range.
    """

    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    degrees: float = 10.0
    translate: float = 0.1
    scale_min: float = 0.8
    scale_max: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("brightness", "contrast", "translate"):
            check_range(self, name, 0.0, 1.0)
        check_range(self, "degrees", 0.0, 180.0)
        check_range(self, "scale_min", 0.0, float("inf"), lo_open=True, hi_open=True)
        if self.scale_max < self.scale_min:
            raise AttackConfigError(f"PhysicalBAConfig: scale_max ({self.scale_max}) must be "
                                    f">= scale_min ({self.scale_min})")


def physical_transform(x: torch.Tensor, gen: torch.Generator,
                       cfg: PhysicalBAConfig) -> torch.Tensor:
    """Flip, brightness, contrast, then affine, with per-sample random parameters.

    x: (n, C, H, W) in [0, 1]; returns the same shape in [0, 1].
    """
    n, c, h, w = x.shape
    flip, bright, contr, rot, zoom, tx, ty = rand(gen, 7, n, device=x.device).unbind(0)
    if cfg.flip:
        x = torch.where((flip < 0.5).view(n, 1, 1, 1), x.flip(-1), x)
    x = (x * (1 + cfg.brightness * (2 * bright - 1)).view(n, 1, 1, 1)).clamp(0, 1)
    gray = x if c == 1 else (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    factor = (1 + cfg.contrast * (2 * contr - 1)).view(n, 1, 1, 1)
    x = (factor * x + (1 - factor) * gray.mean((1, 2, 3), keepdim=True)).clamp(0, 1)

    # Output pixel p_out = scale * R(angle) p_in + shift (pixel units, centred); grid_sample
    # needs the inverse map in normalized coordinates: D^-1 A D u_out - D^-1 A shift.
    angle = (2 * rot - 1) * math.radians(cfg.degrees)
    scale = cfg.scale_min + zoom * (cfg.scale_max - cfg.scale_min)
    shift = torch.stack(((2 * tx - 1) * cfg.translate * w, (2 * ty - 1) * cfg.translate * h), 1)
    cos, sin = torch.cos(-angle) / scale, torch.sin(-angle) / scale
    inv = torch.stack((torch.stack((cos, -sin), 1), torch.stack((sin, cos), 1)), 1)  # (n, 2, 2)
    half = x.new_tensor([w / 2, h / 2])
    lin = inv * half.view(1, 1, 2) / half.view(1, 2, 1)
    offset = -(inv @ shift.unsqueeze(-1)).squeeze(-1) / half
    theta = torch.cat((lin, offset.unsqueeze(-1)), 2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@ATTACKS.register("physicalba")
class PhysicalBA(Attack):
    Config = PhysicalBAConfig

    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = stamp(x, *white_corner(self.config.patch_size, *x.shape[1:], x.device))
        return physical_transform(x, gen, self.config)

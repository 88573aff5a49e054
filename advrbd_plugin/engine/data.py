"""Device-resident image data, normalization and on-device augmentation."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..types import as_tensor_images

__all__ = ["DeviceData", "random_crop_flip"]


class DeviceData:
    """Images held once as uint8 (or float) NCHW on the device, normalized per batch.

    images: uint8 (N, H, W, C) 0..255 or float (N, C, H, W) in [0, 1].
    mean, std: per-channel normalization in [0, 1] units.
    When ``stream`` is set the images stay in pinned host memory and each batch is
    copied to the device asynchronously (for data that does not fit the device).
    """

    def __init__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, stream: bool = False):
        images = as_tensor_images(images)
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2)  # NCHW view, uint8 keeps memory 4x smaller
        self.device = device
        self.stream = stream and device.type == "cuda"
        if self.stream:
            self.images = images.contiguous().pin_memory()
        else:
            self.images = images.to(device).contiguous()
        c = self.images.shape[1]
        self.mean = torch.tensor(list(mean), device=device, dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(list(std), device=device, dtype=torch.float32).view(1, c, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    def raw(self, index: torch.Tensor) -> torch.Tensor:
        """float32 (B, C, H, W) in [0, 1] on the device, un-normalized."""
        if self.stream:
            x = self.images[index.cpu()].to(self.device, non_blocking=True)
        else:
            x = self.images[index.to(self.device)]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def batch(self, index: torch.Tensor, augment: bool = False,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Normalized float32 (B, C, H, W) batch, augmented when asked."""
        x = self.raw(index)
        if augment:
            x = random_crop_flip(x, generator=generator)
        return self.normalize(x)


def random_crop_flip(x: torch.Tensor, pad: Optional[int] = None,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random crop after reflect padding plus random horizontal flip, vectorized.

    x: (B, C, H, W) float. pad defaults to H // 8 (4 for 32x32).
    The random draws come from ``generator`` (CPU) so results do not depend on the device.
    """
    b, _, h, w = x.shape
    pad = max(1, h // 8) if pad is None else pad
    shifts = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = shifts[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = shifts[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)

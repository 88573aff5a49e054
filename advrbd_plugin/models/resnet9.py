"""ResNet-9 in the Myrtle / DAWNBench style, narrow by default: the CPU preset's model.

    prep    conv3x3(w)  BN ReLU
    layer1  conv3x3(2w) BN ReLU maxpool2   + res1: 2 x (conv3x3(2w) BN ReLU)
    layer2  conv3x3(4w) BN ReLU maxpool2
    layer3  conv3x3(8w) BN ReLU maxpool2   + res3: 2 x (conv3x3(8w) BN ReLU)
    global max pool -> x 0.125 (Myrtle's scale) -> (N, 8w) -> linear

With the default width w = 32 (widths 32-64-128-256; Myrtle's original is w = 64) it
has 1.23M parameters and about 0.1 GMAC per 32x32 image. Pooling after each stage
keeps most convs at 16x16 or less, which is what makes it fast on CPU. No stride-2
stem: a 64x64 input simply costs 4x a 32x32 one.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import ImageClassifier, check_model_args

__all__ = ["ResNet9", "resnet9"]


def _conv_bn(planes_in: int, planes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(planes_in, planes, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(planes), nn.ReLU(inplace=True))


class ResNet9(ImageClassifier):
    """Myrtle ResNet-9 with stage widths (w, 2w, 4w, 8w); feature_dim = 8w."""

    head_name = "fc"

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32):
        super().__init__()
        w1, w2, w3, w4 = width, 2 * width, 4 * width, 8 * width
        self.prep = _conv_bn(in_channels, w1)
        self.layer1 = nn.Sequential(_conv_bn(w1, w2), nn.MaxPool2d(2))
        self.res1 = nn.Sequential(_conv_bn(w2, w2), _conv_bn(w2, w2))
        self.layer2 = nn.Sequential(_conv_bn(w2, w3), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(_conv_bn(w3, w4), nn.MaxPool2d(2))
        self.res3 = nn.Sequential(_conv_bn(w4, w4), _conv_bn(w4, w4))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.feature_dim = w4
        self.fc = nn.Linear(w4, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.prep(x))
        x = x + self.res1(x)
        x = self.layer3(self.layer2(x))
        x = x + self.res3(x)
        return torch.flatten(self.pool(x), 1) * 0.125  # Myrtle's logit scale: stable at lr 0.1


@MODELS.register("resnet9")
def resnet9(num_classes: int, input_size: int = 32, in_channels: int = 3,
            width: int = 32) -> ResNet9:
    """Narrow ResNet-9; ``width`` is the first stage's channel count (stages w, 2w, 4w, 8w)."""
    check_model_args("resnet9", num_classes, input_size, in_channels)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"model 'resnet9': expected width to be an integer >= 1, found {width!r}.")
    return ResNet9(int(num_classes), int(in_channels), width)

"""MobileNetV2 (torchvision's blocks) adapted to 32x32 / 64x64 inputs.

Changes from torchvision's ImageNet model: the first conv has stride 1, and for
input_size <= 32 the second stage (24 channels) also has stride 1 (the usual CIFAR
tweak), leaving a total stride of 8 (32x32 -> 4x4). For larger inputs that stage keeps
stride 2 (total stride 16: 64x64 -> 4x4, the same cost as 32x32). The classifier is a
single Linear (no dropout), so ``forward == classifier(forward_features)``.
Module names follow torchvision (``features.0.0``, ``features.1.conv.0.0``, ...).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

from ..registry import MODELS
from .base import ImageClassifier, check_model_args

__all__ = ["MobileNetV2", "mobilenet_v2"]


class MobileNetV2(ImageClassifier):
    """MobileNetV2 (width 1.0) for small images; feature_dim = 1280."""

    head_name = "classifier"

    def __init__(self, num_classes: int, input_size: int = 32, in_channels: int = 3):
        super().__init__()
        # expansion t, channels c, blocks n, stride s of the first block
        setting = [(1, 16, 1, 1), (6, 24, 2, 1 if input_size <= 32 else 2), (6, 32, 3, 2),
                   (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, 32, stride=1,
                                                        activation_layer=nn.ReLU6)]
        planes_in = 32
        for t, c, n, s in setting:
            for j in range(n):
                layers.append(InvertedResidual(planes_in, c, s if j == 0 else 1, expand_ratio=t))
                planes_in = c
        self.feature_dim = 1280
        layers.append(Conv2dNormActivation(planes_in, self.feature_dim, kernel_size=1,
                                           activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


@MODELS.register("mobilenet_v2")
def mobilenet_v2(num_classes: int, input_size: int = 32, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2 for small images: 2.24M parameters (10 classes)."""
    check_model_args("mobilenet_v2", num_classes, input_size, in_channels)
    return MobileNetV2(int(num_classes), int(input_size), int(in_channels))

"""ResNet-18/34 (BasicBlock) in torchvision's structure, adapted to small images.

Stem: one 3x3 conv + BN + ReLU and no max-pool. For input_size <= 32 the stem conv has
stride 1 (the usual CIFAR ResNet); for larger inputs (e.g. Tiny-ImageNet 64x64) it has
stride 2, so a 64x64 image costs the same as a 32x32 one (4x4 maps before pooling).
Parameter and buffer names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``), but the stem conv is 3x3 instead of 7x7.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ..registry import MODELS
from .base import ImageClassifier, check_model_args

__all__ = ["ResNet", "resnet18", "resnet34"]

STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet(ImageClassifier):
    """BasicBlock ResNet; ``blocks`` = blocks per stage; feature_dim = 512."""

    head_name = "fc"

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int,
                 input_size: int = 32, in_channels: int = 3):
        super().__init__()
        stem_stride = 1 if input_size <= 32 else 2
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        planes_in = STAGE_WIDTHS[0]
        for i, (width, n) in enumerate(zip(STAGE_WIDTHS, blocks)):
            stride = 1 if i == 0 else 2
            layer = []
            for j in range(n):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or planes_in != width:
                    downsample = nn.Sequential(nn.Conv2d(planes_in, width, 1, s, bias=False),
                                               nn.BatchNorm2d(width))
                layer.append(BasicBlock(planes_in, width, s, downsample))
                planes_in = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = STAGE_WIDTHS[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


@MODELS.register("resnet18")
def resnet18(num_classes: int, input_size: int = 32, in_channels: int = 3) -> ResNet:
    """ResNet-18 for small images: 11.2M parameters (10 classes)."""
    check_model_args("resnet18", num_classes, input_size, in_channels)
    return ResNet((2, 2, 2, 2), int(num_classes), int(input_size), int(in_channels))


@MODELS.register("resnet34")
def resnet34(num_classes: int, input_size: int = 32, in_channels: int = 3) -> ResNet:
    """ResNet-34 for small images: 21.3M parameters (10 classes)."""
    check_model_args("resnet34", num_classes, input_size, in_channels)
    return ResNet((3, 4, 6, 3), int(num_classes), int(input_size), int(in_channels))

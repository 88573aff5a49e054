"""ResNet-20 of He et al. 2016 (section 4.2, CIFAR-10): 0.27M parameters (269,722 for 10 classes).

Stem conv3x3(16)-BN-ReLU, three stages of 16/32/64 channels with 3 BasicBlocks each
(strides 1, 2, 2), global average pooling, linear. Shortcuts are **option A**, as in the
paper's CIFAR experiments: identity, and where the shape changes a parameter-free
shortcut that subsamples with stride 2 and zero-pads the new channels. So every conv is
a 3x3 conv followed by its BN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from ..registry import MODELS
from .base import ImageClassifier, check_model_args

__all__ = ["ZeroPadShortcut", "CifarResNet", "resnet20"]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: (N, C, H, W) -> (N, C + extra, ceil(H/s), ceil(W/s)), new channels 0."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


class CifarResNet(ImageClassifier):
    """He et al.'s 6n+2-layer CIFAR ResNet; feature_dim = 64."""

    head_name = "fc"

    def __init__(self, n: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        widths = (16, 32, 64)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        planes_in = widths[0]
        for i, width in enumerate(widths):
            layer = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                shortcut = None
                if stride != 1 or planes_in != width:
                    shortcut = ZeroPadShortcut(width - planes_in, stride)
                layer.append(BasicBlock(planes_in, width, stride, shortcut))
                planes_in = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)


@MODELS.register("resnet20")
def resnet20(num_classes: int, input_size: int = 32, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (option-A shortcuts): 269,722 parameters (10 classes); stride-1 stem for any size."""
    check_model_args("resnet20", num_classes, input_size, in_channels)
    return CifarResNet(3, int(num_classes), int(in_channels))

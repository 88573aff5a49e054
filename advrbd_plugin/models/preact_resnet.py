"""Pre-activation ResNet-18 with BackdoorBench-compatible state-dict keys.

Names match BackdoorBench's ``models/preact_resnet.py`` (``conv1``, ``layerK.B.bn1``,
``layerK.B.conv1``, ``layerK.B.bn2``, ``layerK.B.conv2``, ``layerK.B.shortcut.0``,
``linear``), so a BackdoorBench ``preactresnet18`` state dict loads with
``load_state_dict(strict=True)`` (strip a ``module.`` prefix first) and computes the same
function: 3x3 stride-1 stem for every input size, no BN/ReLU after the last block,
adaptive average pooling to 1x1. In a pre-activation block BN comes *before* each conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .base import ImageClassifier, check_model_args

__all__ = ["PreActBlock", "PreActResNet", "preactresnet18"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; a 1x1 conv shortcut (on the pre-activated input) when the
    shape changes, the identity otherwise."""

    def __init__(self, planes_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(planes_in)
        self.conv1 = nn.Conv2d(planes_in, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or planes_in != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(planes_in, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + residual


class PreActResNet(ImageClassifier):
    """PreAct ResNet with stages 64/128/256/512; feature_dim = 512."""

    head_name = "linear"

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        planes_in = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layer = []
            for j in range(n):
                layer.append(PreActBlock(planes_in, width, 2 if (i > 0 and j == 0) else 1))
                planes_in = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.linear = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


@MODELS.register("preactresnet18")
def preactresnet18(num_classes: int, input_size: int = 32, in_channels: int = 3) -> PreActResNet:
    """PreAct-ResNet-18 (BackdoorBench's default model): 11.2M parameters (10 classes).

    ``input_size`` is only checked: like BackdoorBench, the stem keeps stride 1 for any size.
    """
    check_model_args("preactresnet18", num_classes, input_size, in_channels)
    return PreActResNet((2, 2, 2, 2), int(num_classes), int(in_channels))

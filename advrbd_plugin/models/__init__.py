"""Model zoo. Importing this package registers every model in ``MODELS``.

Every model is an :class:`ImageClassifier`: normalized float input (N, C, H, W) with
C = ``in_channels`` and any H, W >= 8; ``forward`` -> logits (N, num_classes);
``forward_features`` -> pooled features (N, feature_dim); ``get_classifier()`` -> the
last ``nn.Linear``.
"""
from __future__ import annotations

from torch import nn

from ..registry import MODELS
from . import cifar_resnet, mobilenet, preact_resnet, resnet, resnet9
from .base import ImageClassifier

__all__ = ["ImageClassifier", "build_model", "cifar_resnet", "mobilenet", "preact_resnet",
           "resnet", "resnet9"]


def build_model(name: str, num_classes: int, input_size: int = 32, in_channels: int = 3,
                **kwargs) -> nn.Module:
    """Build registered model ``name``; extra ``kwargs`` go to its factory (e.g. ``width``
    for resnet9). An unknown name raises ``UnknownNameError`` listing the choices."""
    return MODELS.get(name)(num_classes, input_size=input_size, in_channels=in_channels, **kwargs)

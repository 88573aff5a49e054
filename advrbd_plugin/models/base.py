"""Shared interface of every model in the zoo.

A model maps float images (N, C, H, W), already normalized, to logits (N, num_classes).
``forward_features`` returns the pooled penultimate features (N, feature_dim) and
``forward(x) == get_classifier()(forward_features(x))`` holds exactly (no dropout
between them), so defenses can work on features and logits interchangeably.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["ImageClassifier", "check_model_args"]

MIN_INPUT_SIZE = 8


class ImageClassifier(nn.Module):
    """Base class: subclasses build the trunk, set ``feature_dim`` and name their last
    ``nn.Linear`` in ``head_name`` (kept as the original architecture names it)."""

    head_name = "fc"
    feature_dim: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> pooled penultimate features (N, feature_dim)."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        """The last linear layer (features -> logits)."""
        return getattr(self, self.head_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes)."""
        return self.get_classifier()(self.forward_features(x))


def check_model_args(name: str, num_classes: int, input_size: int, in_channels: int) -> None:
    """Raise ValueError with the expected values when a factory gets bad arguments."""
    for arg, value, lowest in (("num_classes", num_classes, 1),
                               ("input_size", input_size, MIN_INPUT_SIZE),
                               ("in_channels", in_channels, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < lowest:
            raise ValueError(f"model {name!r}: expected {arg} to be an integer >= {lowest}, "
                             f"found {value!r}.")

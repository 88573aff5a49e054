"""``none``: no poisoning, so the runner has one code path with and without an attack."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import ATTACKS
from ..types import GroundTruth, PoisonedDataset
from .base import Attack


@dataclass
class NoAttackConfig:
    """The ``none`` attack has no knobs."""


@ATTACKS.register("none")
class NoAttack(Attack):
    """Leaves the data as is: empty masks, target None, and no triggered test set."""

    Config = NoAttackConfig

    def poison(self, dataset: PoisonedDataset, seed: int = 0) -> PoisonedDataset:
        """The same images and labels with an all-clean ``GroundTruth``."""
        empty = torch.zeros(len(dataset), dtype=torch.bool, device=dataset.labels.device)
        truth = GroundTruth(dataset.labels.clone(), empty, empty.clone(), None, self.name)
        return dataclasses.replace(dataset, truth=truth)

    def triggered_test_set(self, images: Any, labels: Any, num_classes=None, seed: int = 0):
        """None: there is no trigger to test."""
        return None

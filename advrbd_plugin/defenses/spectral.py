"""Spectral Signatures (Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks",
NeurIPS 2018).

Data: the poisoned training set and a freshly initialized model; no clean data.

1. ``detector``: train the model on the whole poisoned set (the plain recipe).
2. ``detect``: per class, center the penultimate features, take the top right singular
   vector v and score each sample by its squared projection ((r - mean) . v)^2; remove the
   ``removal_factor * eps`` highest-scoring share of the class.
3. ``retrain``: train a fresh model on the kept samples.

Tran et al. remove 1.5 x the known poison ratio; the defender here does not know it, so
``eps`` is an assumed ratio (5% by default, the attacks' default rate). Note that eps is a
share of each class: an all-to-one attack poisoning 5% of a 10-class set makes about a third
of the target class poison, so these defaults can remove at most ~22% of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_fraction, check_positive, class_indices, detect_and_retrain
from .base import Defense, DefenseConfig

__all__ = ["SpectralSignatures", "SpectralConfig", "spectral_scores"]


@dataclass
class SpectralConfig(DefenseConfig):
    """eps: assumed poison ratio per class; removal_factor * eps of each class is removed.
    detector_epochs_frac / retrain_epochs_frac: relative to the plain recipe's epochs."""

    eps: float = 0.05
    removal_factor: float = 1.5
    detector_epochs_frac: float = 1.0
    retrain_epochs_frac: float = 1.0


def spectral_scores(feats: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    remove: float) -> tuple[torch.Tensor, torch.Tensor]:
    """feats (N, D), labels (N,) -> (scores (N,), flagged (N,) bool).

    scores: squared projection on the class's top singular direction, divided by the class
    mean of that quantity (comparable across classes). flagged: the ceil(remove * n_k)
    highest scores of each class k.
    """
    scores = torch.zeros(len(labels))
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    for idx in class_indices(labels, num_classes):
        if len(idx) < 2:
            continue
        r = feats[idx].double()
        r = r - r.mean(0)
        v = torch.linalg.svd(r, full_matrices=False).Vh[0]
        s = (r @ v) ** 2
        scores[idx] = (s / s.mean().clamp_min(1e-12)).float()
        flagged[idx[s.argsort(descending=True)[:math.ceil(remove * len(idx))]]] = True
    return scores, flagged


@DEFENSES.register("spectral")
class SpectralSignatures(Defense):
    """Remove per-class outliers along the top singular direction of the features, retrain."""

    Config = SpectralConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        check_fraction(self, "eps")
        check_positive(self, "removal_factor", "detector_epochs_frac", "retrain_epochs_frac")
        if not self.config.eps * self.config.removal_factor < 1:
            raise ValueError("spectral: expected eps * removal_factor < 1 (the share removed per "
                             f"class), found {self.config.eps * self.config.removal_factor:g}")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        remove = self.config.eps * self.config.removal_factor

        def detect(feats, labels, num_classes):
            scores, flagged = spectral_scores(feats, labels, num_classes, remove)
            return scores, flagged, {"removed_share": remove}

        return detect_and_retrain(self, data, model, detect)

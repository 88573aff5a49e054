"""CutMix repair (Borgnia et al., "Strong Data Augmentation Sanitizes Poisoning and Backdoor
Attacks Without an Accuracy Tradeoff", ICASSP 2021; CutMix of Yun et al., ICCV 2019).

Data: the already-trained (backdoored) model and the poisoned training set; no clean data.
The model is fine-tuned on the poisoned set with CutMix: with probability ``prob`` a batch
gets a random box (area fraction 1 - lambda, lambda ~ Beta(beta, beta)) pasted from a
shuffled copy of itself, and each target becomes the area-weighted mix of both labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_positive, fit_stage
from .base import Defense, DefenseConfig

__all__ = ["CutMixRepair", "CutMixConfig", "CutMix"]


@dataclass
class CutMixConfig(DefenseConfig):
    """prob: chance a batch is mixed. beta: Beta(beta, beta) of the kept-area fraction.
    epochs_frac / lr_frac: repair epochs and peak lr relative to the plain recipe."""

    prob: float = 0.5
    beta: float = 1.0
    epochs_frac: float = 0.2
    lr_frac: float = 0.1


class CutMix:
    """Batch transform for ``Engine.fit(mix=...)``: (x (B, C, H, W), y (B,), generator)
    -> (x mixed, targets (B, K) probabilities)."""

    def __init__(self, num_classes: int, prob: float = 0.5, beta: float = 1.0):
        self.num_classes, self.prob, self.beta = num_classes, prob, beta

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        targets = F.one_hot(y, self.num_classes).float()
        if float(torch.rand(1, generator=generator)) >= self.prob:
            return x, targets
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
        lam = float(np.random.default_rng(seed).beta(self.beta, self.beta))
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy = int(torch.randint(0, h, (1,), generator=generator))
        cx = int(torch.randint(0, w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        mixed = x.clone()
        mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        area = (y1 - y0) * (x1 - x0) / (h * w)
        return mixed, (1 - area) * targets + area * targets[perm]


@DEFENSES.register("cutmix")
class CutMixRepair(Defense):
    """Fine-tune the backdoored model on the poisoned set with CutMix augmentation."""

    Config = CutMixConfig
    requires_clean_data = False
    needs_trained_model = True

    def validate(self) -> None:
        check_positive(self, "beta", "epochs_frac", "lr_frac")
        if not 0 < self.config.prob <= 1:
            raise ValueError(f"cutmix.prob: expected a probability in (0, 1], found {self.config.prob!r}")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        c = self.config
        cfg = self.train.replace(epochs=c.epochs_frac * self.train.epochs, lr=c.lr_frac * self.train.lr)
        history = fit_stage(self, "repair", model, self.engine.data(data), data.labels, cfg,
                            mix=CutMix(data.num_classes, c.prob, c.beta))
        return DefenseResult(model=model, history={"repair": history})

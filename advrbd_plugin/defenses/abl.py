"""Anti-Backdoor Learning, ABL (Li et al., "Anti-Backdoor Learning: Training Clean Models on
Poisoned Data", NeurIPS 2021).

Data: the poisoned training set and a freshly initialized model; no clean data.

1. ``isolation``: train with the local gradient ascent (LGA) loss sign(l - gamma) * l for
   the first ``isolation_epochs_frac`` of training: a sample whose loss falls below gamma
   is pushed back up, so only the fast-learned (backdoor) samples keep a low loss.
2. ``isolate``: the ``isolation_ratio`` lowest-loss samples form the isolated set D_b.
3. ``finetune``: continue training on the other samples (``finetune_epochs_frac``).
4. ``unlearn``: gradient ascent on D_b for ``unlearn_epochs`` passes over it at the small
   learning rate ``unlearn_lr_frac`` x the plain lr (Li et al.: 5e-4 with lr 0.1).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_fraction, check_positive, fit_stage
from .base import Defense, DefenseConfig

__all__ = ["ABL", "ABLConfig", "lga_loss"]


@dataclass
class ABLConfig(DefenseConfig):
    """gamma: LGA loss threshold. isolation_ratio: share isolated. *_epochs_frac: relative
    to the plain recipe's epochs (Li et al.: 20, 60 of 100). unlearn_epochs: passes over the
    isolated set (cheap: it is 1% of the data). unlearn_lr_frac: unlearning lr / plain lr."""

    gamma: float = 0.5
    isolation_ratio: float = 0.01
    isolation_epochs_frac: float = 0.2
    finetune_epochs_frac: float = 0.6
    unlearn_epochs: float = 20.0
    unlearn_lr_frac: float = 0.005


def lga_loss(loss: torch.Tensor, gamma: float) -> torch.Tensor:
    """Local gradient ascent: per-sample loss (B,) -> sign(loss - gamma) * loss (B,)."""
    return torch.sign(loss - gamma) * loss


@DEFENSES.register("abl")
class ABL(Defense):
    """Isolate the lowest-loss samples under LGA training, then unlearn them."""

    Config = ABLConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        check_fraction(self, "isolation_ratio")
        check_positive(self, "gamma", "isolation_epochs_frac", "finetune_epochs_frac",
                       "unlearn_epochs", "unlearn_lr_frac")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        c, eng, train = self.config, self.engine, self.train
        dev = eng.data(data)
        history = {"isolation": fit_stage(
            self, "isolation", model, dev, data.labels,
            train.replace(epochs=c.isolation_epochs_frac * train.epochs),
            loss_transform=partial(lga_loss, gamma=c.gamma))}
        loss = self.timed("isolate", lambda: eng.per_sample_loss(model, dev, data.labels))
        isolated = torch.zeros(len(loss), dtype=torch.bool)
        isolated[loss.argsort()[:max(1, int(c.isolation_ratio * len(loss)))]] = True
        history["finetune"] = fit_stage(self, "finetune", model, dev, data.labels,
                                        train.replace(epochs=c.finetune_epochs_frac * train.epochs),
                                        weights=(~isolated).float())
        history["unlearn"] = fit_stage(self, "unlearn", model, dev, data.labels,
                                       train.replace(epochs=c.unlearn_epochs,
                                                     lr=c.unlearn_lr_frac * train.lr,
                                                     schedule="constant"),
                                       weights=-isolated.float())
        return DefenseResult(model=model, scores=-loss, poison_mask=isolated, history=history,
                             extra={"isolated": int(isolated.sum())})

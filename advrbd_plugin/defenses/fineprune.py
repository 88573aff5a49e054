"""Fine-pruning (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks", RAID 2018).

Data: the already-trained (backdoored) model and reserved clean samples (``clean_set``).

1. ``prune``: rank the channels of the last convolutional layer by their mean activation
   on the clean samples and prune them, least active first, until the clean accuracy has
   dropped by more than ``acc_drop`` or ``max_ratio`` of the channels are gone (backdoor
   neurons tend to lie dormant on clean inputs).
2. ``finetune``: fine-tune on the clean samples with the pruned channels held at zero.

The last conv layer's channels are the pooled penultimate features of our models
(``forward = classifier(forward_features)``), so pruning channel c is exactly zeroing
column c of the classifier's weight; the returned model keeps its architecture.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_fraction, check_positive
from .base import Defense, DefenseConfig
from .finetuning import fine_tune

__all__ = ["FinePruning", "FinePruningConfig", "prune_order"]


@dataclass
class FinePruningConfig(DefenseConfig):
    """acc_drop: largest tolerated clean-accuracy drop while pruning (fraction, 0.1 = 10
    points). max_ratio: largest fraction of channels pruned. epochs_frac, lr_frac,
    batch_size: the fine-tuning that follows (as in ``finetuning``)."""

    acc_drop: float = 0.1
    max_ratio: float = 0.9
    epochs_frac: float = 1.0
    lr_frac: float = 0.1
    batch_size: int = 64


@DEFENSES.register("fineprune")
class FinePruning(Defense):
    """Prune dormant last-layer channels on clean data, then fine-tune on it."""

    Config = FinePruningConfig
    requires_clean_data = True
    needs_trained_model = True

    def validate(self) -> None:
        check_fraction(self, "acc_drop", "max_ratio")
        check_positive(self, "epochs_frac", "lr_frac", "batch_size")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        if not hasattr(model, "get_classifier") or not hasattr(model, "forward_features"):
            raise TypeError(f"fineprune needs a model with forward_features() and get_classifier() "
                            f"(advrbd_plugin.models); found {type(model).__name__}")
        fc = model.get_classifier()
        feats = self.timed("features", lambda: self.engine.features(model, self.engine.data(clean_set)))
        mask, curve = self.timed("prune", lambda: prune_order(
            feats, clean_set.labels, fc.weight.detach().float().cpu(),
            fc.bias.detach().float().cpu() if fc.bias is not None else None,
            self.config.acc_drop, self.config.max_ratio))
        keep = mask.to(fc.weight.device, fc.weight.dtype)
        hook = fc.register_forward_pre_hook(lambda _m, args: (args[0] * keep,))
        try:
            history = {"finetune": fine_tune(self, model, clean_set)}
        finally:
            hook.remove()
        with torch.no_grad():
            fc.weight.mul_(keep)
        pruned = int((~mask).sum())
        return DefenseResult(model=model, history=history,
                             extra={"pruned_channels": pruned, "channels": len(mask),
                                    "clean_acc_before": curve[0], "clean_acc_pruned": curve[pruned]})


def prune_order(feats: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, acc_drop: float, max_ratio: float
                ) -> tuple[torch.Tensor, list[float]]:
    """Prune channels in order of increasing mean activation.

    feats: (N, D) clean features; labels: (N,); weight (K, D) and bias (K,) of the classifier.
    Returns (keep mask (D,) bool, clean accuracy after pruning 0, 1, ... r channels), where r
    stops before the first prune that costs more than ``acc_drop`` accuracy or exceeds
    ``max_ratio`` of the D channels.
    """
    order = feats.mean(0).argsort()
    mask = torch.ones(feats.shape[1], dtype=torch.bool)

    def acc() -> float:
        logits = F.linear(feats * mask, weight, bias)
        return float((logits.argmax(1) == labels).float().mean())

    curve = [acc()]
    for c in order[:int(max_ratio * len(order))]:
        mask[c] = False
        a = acc()
        if a < curve[0] - acc_drop:
            mask[c] = True
            break
        curve.append(a)
    return mask, curve

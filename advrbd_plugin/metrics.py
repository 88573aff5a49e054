"""Evaluation metrics: ACC, ASR, RA and poison-detection quality.

All values are fractions in [0, 1]; ``None`` where the metric does not apply
(no attack, no scores, an empty class).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["DEFINITIONS", "attack_metrics", "detection_metrics"]

DEFINITIONS = {
    "acc": "clean test accuracy: fraction of clean test inputs predicted as their true label",
    "asr": "attack success rate: fraction of triggered test inputs whose true label differs from "
           "the target that are predicted as the target",
    "ra": "robust accuracy: fraction of triggered test inputs (true label != target) predicted "
          "as their true label",
    "tpr": "detection recall: fraction of poisoned training samples the defense flags",
    "fpr": "fraction of clean (non-poisoned, non-cover) training samples the defense flags",
    "precision": "fraction of flagged training samples that are poisoned",
    "f1": "harmonic mean of precision and tpr",
    "auroc": "area under the ROC curve of the defense's suspicion scores for poisoned vs clean",
    "cover_flagged": "fraction of cover samples (triggered, true label kept) the defense flags",
}


def attack_metrics(pred_triggered: torch.Tensor, target_labels: torch.Tensor,
                   true_labels: torch.Tensor) -> dict:
    """ASR and RA from predictions on a triggered test set ((N,) int64 each)."""
    keep = true_labels != target_labels
    if not bool(keep.any()):
        return {"asr": None, "ra": None}
    p, t, y = pred_triggered[keep], target_labels[keep], true_labels[keep]
    return {"asr": float((p == t).float().mean()), "ra": float((p == y).float().mean())}


def detection_metrics(poison_mask: torch.Tensor, cover_mask: Optional[torch.Tensor] = None,
                      flagged: Optional[torch.Tensor] = None,
                      scores: Optional[torch.Tensor] = None) -> dict:
    """Detection quality of a defense against the ground truth.

    poison_mask, cover_mask: (N,) bool truth. flagged: (N,) bool predicted poison.
    scores: (N,) float, higher = more suspicious. Cover samples count neither as
    poisoned nor as clean for TPR/FPR/precision; their flag rate is reported apart.
    """
    poison_mask = poison_mask.bool().cpu()
    cover_mask = torch.zeros_like(poison_mask) if cover_mask is None else cover_mask.bool().cpu()
    clean = ~poison_mask & ~cover_mask
    out: dict = {k: None for k in ("tpr", "fpr", "precision", "f1", "auroc", "cover_flagged")}
    if flagged is not None:
        f = flagged.bool().cpu()
        tp = int((f & poison_mask).sum())
        fp = int((f & clean).sum())
        if poison_mask.any():
            out["tpr"] = tp / int(poison_mask.sum())
        if clean.any():
            out["fpr"] = fp / int(clean.sum())
        if tp + fp:
            out["precision"] = tp / (tp + fp)
        if out["precision"] is not None and out["tpr"] is not None and tp:
            out["f1"] = 2 * out["precision"] * out["tpr"] / (out["precision"] + out["tpr"])
        if cover_mask.any():
            out["cover_flagged"] = int((f & cover_mask).sum()) / int(cover_mask.sum())
        out["flagged"] = int(f.sum())
    if scores is not None:
        s = scores.float().cpu()
        keep = (poison_mask | clean) & torch.isfinite(s)  # NaN scores (degenerate runs) are left out
        out["unscored"] = int(((poison_mask | clean) & ~torch.isfinite(s)).sum())
        if (poison_mask & keep).any() and (clean & keep).any():
            out["auroc"] = _auroc(s[keep], poison_mask[keep])
    return out


def _auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Rank-based AUROC (Mann-Whitney U), ties counted half."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.numpy().astype(int), scores.numpy()))

"""Attack and detection metrics against hand-computed values."""
from __future__ import annotations

import torch

from advrbd_plugin.metrics import attack_metrics, detection_metrics


def test_detection_metrics_by_hand():
    poison = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    cover = torch.tensor([0, 0, 0, 0, 0, 1], dtype=torch.bool)
    flagged = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)
    scores = torch.tensor([0.9, 0.8, 0.85, 0.1, 0.2, 0.5])
    d = detection_metrics(poison, cover, flagged, scores)
    assert d["tpr"] == 0.5 and d["fpr"] == 1 / 3 and d["precision"] == 0.5
    assert d["cover_flagged"] == 1.0 and d["flagged"] == 3
    assert abs(d["auroc"] - 5 / 6) < 1e-9  # poison ranks above 5 of the 6 (poison, clean) pairs


def test_detection_metrics_leave_nan_scores_out():
    poison = torch.tensor([1, 0, 0, 0], dtype=torch.bool)
    scores = torch.tensor([1.0, float("nan"), 0.0, 0.5])
    d = detection_metrics(poison, scores=scores)
    assert d["auroc"] == 1.0 and d["unscored"] == 1
    d = detection_metrics(poison, scores=torch.full((4,), float("nan")))
    assert d["auroc"] is None and d["unscored"] == 4


def test_attack_metrics():
    pred = torch.tensor([1, 1, 2, 3])
    m = attack_metrics(pred, torch.tensor([1, 1, 1, 1]), torch.tensor([0, 2, 2, 3]))
    assert m["asr"] == 0.5 and m["ra"] == 0.5

"""Helpers shared by the baseline defenses: knob checks, checkpointed training stages,
per-class index sets, and the detect -> remove -> retrain recipe of Spectral Signatures
and Activation Clustering."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..engine import TrainConfig
from ..types import DefenseResult, PoisonedDataset
from .base import Defense, reinitialize

__all__ = ["check_positive", "check_fraction", "model_state", "fit_stage", "class_indices",
           "detect_and_retrain"]


def check_positive(defense: Defense, *names: str) -> None:
    """Raise ValueError unless every named knob of ``defense.config`` is > 0."""
    for name in names:
        value = getattr(defense.config, name)
        if not value > 0:
            raise ValueError(f"{defense.registry_name}.{name}: expected a value > 0, found {value!r}")


def check_fraction(defense: Defense, *names: str) -> None:
    """Raise ValueError unless every named knob of ``defense.config`` lies in (0, 1)."""
    for name in names:
        value = getattr(defense.config, name)
        if not 0 < value < 1:
            raise ValueError(f"{defense.registry_name}.{name}: expected a fraction in (0, 1), "
                             f"found {value!r}")


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state dict (what a stage checkpoint stores)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def fit_stage(defense: Defense, name: str, model: nn.Module, data, labels: torch.Tensor,
              cfg: TrainConfig, **fit_kw) -> list[dict]:
    """Train ``model`` in place through the engine as checkpointed stage ``name``.

    fit_kw go to ``Engine.fit`` (weights, ascent_bound, mix, loss_transform...).
    Returns the per-epoch history; a resumed run loads the stage's weights instead.
    """
    out = defense.stage(name, lambda: {
        "history": defense.engine.fit(model, data, labels, cfg,
                                      desc=f"{defense.registry_name} {name}", **fit_kw),
        "state": model_state(model)})
    model.load_state_dict(out["state"])
    return out["history"]


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Per class k, the (n_k,) int64 indices of samples labelled k (possibly empty)."""
    labels = labels.cpu()
    return [torch.nonzero(labels == k).flatten() for k in range(num_classes)]


#: detect(features (N, D) float32, labels (N,) int64, num_classes)
#:   -> (scores (N,) float32, flagged (N,) bool, extra dict)
Detector = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, dict]]


def detect_and_retrain(defense: Defense, data: PoisonedDataset, model: nn.Module,
                       detect: Detector) -> DefenseResult:
    """Train a detector on the whole set, flag samples from its penultimate features,
    then train a fresh model on the unflagged samples only.

    Knobs read from ``defense.config``: detector_epochs_frac, retrain_epochs_frac
    (fractions of the plain recipe's epochs).
    """
    c, eng, epochs = defense.config, defense.engine, defense.train.epochs
    dev = eng.data(data)
    fresh = reinitialize(model, eng.seed + 1)
    history = {"detector": fit_stage(defense, "detector", model, dev, data.labels,
                                     defense.train.replace(epochs=c.detector_epochs_frac * epochs))}
    feats = defense.timed("features", lambda: eng.features(model, dev))
    scores, flagged, extra = defense.timed(
        "detect", lambda: detect(feats, data.labels, data.num_classes))
    if bool(flagged.all()):
        raise RuntimeError(f"{defense.registry_name}: every sample was flagged; nothing to retrain on")
    history["retrain"] = fit_stage(defense, "retrain", fresh, dev, data.labels,
                                   defense.train.replace(epochs=c.retrain_epochs_frac * epochs),
                                   weights=(~flagged).float())
    return DefenseResult(model=fresh, scores=scores, poison_mask=flagged, history=history,
                         extra={"flagged": int(flagged.sum()), **extra})

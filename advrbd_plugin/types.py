"""Core data types: what a defender holds, what an evaluator holds, what a defense returns.

Image convention everywhere in the package:

* ``uint8`` tensors are NHWC with values 0..255 (the on-disk form of every toolbox);
* floating tensors are NCHW with values in [0, 1] (un-normalized).

Normalization (``mean``/``std``) is metadata; the engine applies it on the device.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "GroundTruth",
    "PoisonedDataset",
    "TriggeredTestSet",
    "DefenseResult",
    "as_tensor_images",
    "to_float_nchw",
    "to_uint8_nhwc",
]

_RANGE_TOL = 1e-3


def _fail(what: str, expected: str, found: str, fix: str = "") -> None:
    msg = f"{what}: expected {expected}, found {found}."
    if fix:
        msg += f" {fix}"
    raise ValueError(msg)


def as_tensor_images(images: Any, what: str = "images") -> torch.Tensor:
    """Accept a numpy array or tensor of images and return a tensor (no copy when possible).

    Checks layout and range: uint8 must be NHWC with 1 or 3 channels; floats must be
    NCHW with 1 or 3 channels and values in [0, 1] (tolerance 1e-3).
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        _fail(what, "a numpy array or torch tensor", type(images).__name__)
    if images.ndim != 4:
        _fail(what, "a 4-D batch (uint8 NHWC or float NCHW)", f"shape {tuple(images.shape)}",
              "Add a batch dimension or reshape single-channel images to (N, H, W, 1).")
    if images.shape[0] == 0:
        _fail(what, "at least one image", "an empty batch")
    if images.dtype == torch.uint8:
        if images.shape[-1] not in (1, 3):
            _fail(what, "uint8 images as NHWC with 1 or 3 channels", f"shape {tuple(images.shape)}",
                  "Convert NCHW uint8 with images.permute(0, 2, 3, 1).")
    elif images.dtype.is_floating_point:
        if images.shape[1] not in (1, 3):
            _fail(what, "float images as NCHW with 1 or 3 channels", f"shape {tuple(images.shape)}",
                  "Convert NHWC floats with images.permute(0, 3, 1, 2).")
        lo, hi = float(images.min()), float(images.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL or math.isnan(lo) or math.isnan(hi):
            _fail(what, "float values in [0, 1] (un-normalized)", f"range [{lo:.4g}, {hi:.4g}]",
                  "Divide 0..255 data by 255; undo any mean/std normalization.")
    else:
        _fail(what, "dtype uint8 (NHWC) or a float dtype (NCHW)", f"dtype {images.dtype}")
    return images


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC or float NCHW -> float32 NCHW in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div_(255.0)
    return images.float().clamp(0.0, 1.0)


def to_uint8_nhwc(images: torch.Tensor) -> torch.Tensor:
    """float NCHW in [0, 1] (or uint8 NHWC, returned as is) -> uint8 NHWC, rounded."""
    if images.dtype == torch.uint8:
        return images
    return images.clamp(0, 1).mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _labels(labels: Any, n: int, num_classes: int, what: str) -> torch.Tensor:
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == num_classes and labels.shape[0] == n:
        labels = labels.argmax(1)  # one-hot
    if labels.ndim != 1:
        _fail(what, "a 1-D vector of class indices", f"shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        if not torch.equal(labels, labels.round()):
            _fail(what, "integer class indices", "non-integer floats")
    labels = labels.long()
    if labels.shape[0] != n:
        _fail(what, f"{n} labels (one per image)", f"{labels.shape[0]}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        _fail(what, f"labels in [0, {num_classes})",
              f"range [{int(labels.min())}, {int(labels.max())}]",
              "Check num_classes or remap the labels.")
    return labels


def _mask(mask: Any, n: int, what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.ndim != 1 or mask.shape[0] != n:
        _fail(what, f"a boolean vector of length {n}", f"shape {tuple(mask.shape)}")
    return mask.bool()


@dataclass
class GroundTruth:
    """What only the evaluator may read.

    true_labels: (N,) int64, the clean label of every sample.
    poison_mask: (N,) bool, samples carrying the trigger with the attacker's label
        (for clean-label attacks: the triggered target-class samples).
    cover_mask: (N,) bool, samples carrying a trigger but keeping their true label
        (WaNet noise, TaCT / adaptive cover samples).
    """

    true_labels: torch.Tensor
    poison_mask: torch.Tensor
    cover_mask: torch.Tensor
    target: Optional[int]
    attack: str

    def validate(self, n: int, num_classes: int) -> None:
        self.true_labels = _labels(self.true_labels, n, num_classes, "GroundTruth.true_labels")
        self.poison_mask = _mask(self.poison_mask, n, "GroundTruth.poison_mask")
        self.cover_mask = _mask(self.cover_mask, n, "GroundTruth.cover_mask")
        if bool((self.poison_mask & self.cover_mask).any()):
            _fail("GroundTruth", "disjoint poison and cover masks", "samples in both")
        if self.target is not None and not 0 <= int(self.target) < num_classes:
            _fail("GroundTruth.target", f"a class in [0, {num_classes})", str(self.target))


@dataclass
class PoisonedDataset:
    """A training set as the defender receives it (possibly poisoned).

    images: uint8 (N, H, W, C) in 0..255, or float (N, C, H, W) in [0, 1].
    labels: (N,) int64 labels as given (possibly the attacker's).
    num_classes: number of classes K; labels lie in [0, K).
    mean, std: per-channel normalization the engine applies (in [0, 1] units).
    truth: optional GroundTruth; only evaluation reads it (see ``without_truth``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    truth: Optional[GroundTruth] = None
    name: str = "dataset"

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
            _fail("num_classes", "an integer >= 2", repr(self.num_classes))
        self.num_classes = int(self.num_classes)
        self.images = as_tensor_images(self.images, f"{self.name}.images")
        n = self.images.shape[0]
        self.labels = _labels(self.labels, n, self.num_classes, f"{self.name}.labels")
        c = self.channels
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            _fail("mean/std", f"{c} values each, std > 0", f"mean {self.mean}, std {self.std}")
        if self.truth is not None:
            self.truth.validate(n, self.num_classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1] if self.images.dtype == torch.uint8 else self.images.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W)."""
        s = self.images.shape
        return (int(s[1]), int(s[2])) if self.images.dtype == torch.uint8 else (int(s[2]), int(s[3]))

    def float_images(self) -> torch.Tensor:
        """float32 (N, C, H, W) in [0, 1]."""
        return to_float_nchw(self.images)

    def without_truth(self) -> "PoisonedDataset":
        """The same data with the ground truth removed: what a defense is given."""
        return dataclasses.replace(self, truth=None)

    def subset(self, index: torch.Tensor) -> "PoisonedDataset":
        """Rows ``index`` (indices or a boolean mask), truth included when present."""
        index = torch.as_tensor(index)
        truth = None
        if self.truth is not None:
            t = self.truth
            truth = GroundTruth(t.true_labels[index], t.poison_mask[index], t.cover_mask[index],
                                t.target, t.attack)
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index],
                                   truth=truth)

    def with_labels(self, labels: torch.Tensor) -> "PoisonedDataset":
        return dataclasses.replace(self, labels=labels)


@dataclass
class TriggeredTestSet:
    """Triggered test inputs for ASR and RA.

    images: same convention as PoisonedDataset (uint8 NHWC or float NCHW in [0, 1]).
    target_labels: (N,) the attacker's label for each input.
    true_labels: (N,) the clean label of each input.
    """

    images: torch.Tensor
    target_labels: torch.Tensor
    true_labels: torch.Tensor
    num_classes: int
    attack: str = ""

    def __post_init__(self) -> None:
        self.images = as_tensor_images(self.images, "TriggeredTestSet.images")
        n = self.images.shape[0]
        self.target_labels = _labels(self.target_labels, n, self.num_classes,
                                     "TriggeredTestSet.target_labels")
        self.true_labels = _labels(self.true_labels, n, self.num_classes,
                                   "TriggeredTestSet.true_labels")

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class DefenseResult:
    """What a defense returns.

    model: the cleaned model (in eval mode).
    scores: (N,) float, higher = more suspicious, or None when the defense scores nothing.
    poison_mask: (N,) bool, samples the defense flags as poisoned, or None.
    relabels: (N,) int64 new label per sample, -1 where unchanged, or None.
    timings: stage name -> seconds.
    history: stage name -> list of per-epoch/round records.
    extra: any other JSON-friendly facts (seed set size, class histograms, ...).
    arrays: other per-sample (N,) tensors worth keeping (e.g. the stage-1 KL), written as
        extra columns of poison_report.csv and histogrammed, not put in ``to_dict``.
    """

    model: torch.nn.Module
    scores: Optional[torch.Tensor] = None
    poison_mask: Optional[torch.Tensor] = None
    relabels: Optional[torch.Tensor] = None
    timings: dict[str, float] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(sum(self.timings.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-sample arrays are summarised, not listed)."""
        out: dict[str, Any] = {
            "timings": {k: round(float(v), 3) for k, v in self.timings.items()},
            "seconds": round(self.seconds, 3),
            "history": self.history,
            "extra": self.extra,
        }
        if self.poison_mask is not None:
            out["flagged"] = int(self.poison_mask.sum())
        if self.relabels is not None:
            out["relabeled"] = int((self.relabels >= 0).sum())
        return out

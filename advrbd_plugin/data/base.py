"""``DatasetBundle``: a train/test split held in memory as uint8 NHWC tensors."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..types import PoisonedDataset

__all__ = ["DEFAULT_ROOT", "DatasetBundle", "DatasetNotFoundError", "channel_stats",
           "shared_data_dir", "shared_data_path"]

_MIN_STD = 1.0 / 255.0
DEFAULT_ROOT = "./data"  # where the torchvision and folder loaders look by default


def shared_data_dir() -> Path:
    """The offline data folder: $ADVRBD_DATA_DIR, else ``<repo>/../shared/data``."""
    env = os.environ.get("ADVRBD_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_data_path(filename: str) -> Optional[Path]:
    """``shared_data_dir() / filename`` if that file exists, else None."""
    path = shared_data_dir() / filename
    return path if path.is_file() else None


from ..errors import RecordError  # noqa: E402


class DatasetNotFoundError(FileNotFoundError):
    """The data are not on disk (and no download was asked for); the message says where
    we looked, which check failed and how to fix it. ``reason`` is the message without the
    fix, for a front end that names its own flags."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def _bad(what: str, expected: str, found: str, fix: str = "") -> RecordError:
    return RecordError(f"{what}: expected {expected}, found {found}." + (f" {fix}" if fix else ""))


def _images(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise _bad(what, "a uint8 numpy array or tensor", type(x).__name__)
    if x.dtype != torch.uint8:
        raise _bad(what, "dtype uint8 (values 0..255)", f"dtype {x.dtype}",
                   "Convert [0, 1] floats with (x * 255).round().to(torch.uint8).")
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] == 0:
        raise _bad(what, "a non-empty (N, H, W, C) batch with C in {1, 3}",
                   f"shape {tuple(x.shape)}", "Convert NCHW with x.permute(0, 2, 3, 1).")
    return x.contiguous()


def _targets(y: Any, n: int, num_classes: int, what: str) -> torch.Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(np.ascontiguousarray(y))
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise _bad(what, "integer class indices", f"dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise _bad(what, f"shape ({n},) (one label per image)", f"shape {tuple(y.shape)}")
    y = y.long()
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise _bad(what, f"labels in [0, {num_classes})", f"range [{lo}, {hi}]",
                   "Check num_classes or remap the labels to 0..K-1.")
    return y


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 NHWC images, in [0, 1] units.

    Works from a 256-bin histogram per channel, so memory stays O(N*H*W) bytes. A
    constant channel gets std 1/255 instead of 0.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[-1]):
        counts = torch.bincount(x[..., c].reshape(-1), minlength=256).double()
        p = counts / counts.sum()
        mean = float((p * values).sum())
        var = float((p * (values - mean) ** 2).sum())
        means.append(mean)
        stds.append(max(var ** 0.5, _MIN_STD))
    return tuple(means), tuple(stds)


@dataclass
class DatasetBundle:
    """A dataset's train and test split.

    x_train, x_test: uint8 (N, H, W, C), values 0..255, C in {1, 3}, same H, W, C.
    y_train, y_test: int64 (N,), labels in [0, num_classes).
    mean, std: per-channel normalization in [0, 1] units; computed from x_train when None.
    classes: class names indexed by label; "0".."K-1" when None.
    Numpy arrays are accepted and converted (without copying when possible).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None
    classes: Optional[list[str]] = None

    def __post_init__(self) -> None:
        if (not isinstance(self.num_classes, (int, np.integer)) or isinstance(self.num_classes, bool)
                or self.num_classes < 2):
            raise _bad(f"{self.name}.num_classes", "an integer >= 2", repr(self.num_classes))
        self.num_classes = int(self.num_classes)
        self.x_train = _images(self.x_train, f"{self.name}.x_train")
        self.x_test = _images(self.x_test, f"{self.name}.x_test")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise _bad(f"{self.name}.x_test", f"images shaped like x_train {tuple(self.x_train.shape[1:])}",
                       f"{tuple(self.x_test.shape[1:])}", "Resize both splits to one size.")
        self.y_train = _targets(self.y_train, len(self.x_train), self.num_classes, f"{self.name}.y_train")
        self.y_test = _targets(self.y_test, len(self.x_test), self.num_classes, f"{self.name}.y_test")
        if self.mean is None or self.std is None:
            mean, std = channel_stats(self.x_train)
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        c = self.channels
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise _bad(f"{self.name}.mean/std", f"{c} values each with std > 0",
                       f"mean {self.mean}, std {self.std}")
        if self.classes is None:
            self.classes = [str(k) for k in range(self.num_classes)]
        self.classes = [str(k) for k in self.classes]
        if len(self.classes) != self.num_classes:
            raise _bad(f"{self.name}.classes", f"{self.num_classes} names (one per class)",
                       f"{len(self.classes)}")

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def input_size(self) -> int:
        """Image side H (images are H x W; every built-in loader makes them square)."""
        return int(self.x_train.shape[1])

    def train_set(self) -> PoisonedDataset:
        """The (clean) training split as a PoisonedDataset, before any attack."""
        return PoisonedDataset(self.x_train, self.y_train, self.num_classes, self.mean, self.std,
                               name=self.name)

    def test_set(self) -> PoisonedDataset:
        """The clean test split as a PoisonedDataset (for clean-accuracy evaluation)."""
        return PoisonedDataset(self.x_test, self.y_test, self.num_classes, self.mean, self.std,
                               name=f"{self.name}-test")

    def __repr__(self) -> str:
        return (f"DatasetBundle({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes})")

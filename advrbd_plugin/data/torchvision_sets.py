"""``cifar10``, ``cifar100``, ``gtsrb`` through torchvision's dataset classes.

``root`` (default ``./data``) is searched as given and as ``root/<name>`` (BackdoorBench
keeps ``./data/cifar10``). Nothing is downloaded unless ``download=True``. GTSRB images
(15..250 px) are resized to 32x32 with cv2 (area when shrinking, bilinear otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..registry import DATASETS
from .base import DEFAULT_ROOT, DatasetBundle, DatasetNotFoundError
from .images import resize

__all__ = ["load_cifar10", "load_cifar100", "load_gtsrb"]

GTSRB_SIZE = 32


def _missing(name: str, checks: list[str], extra: str = "") -> DatasetNotFoundError:
    reason = f"dataset {name!r} could not be opened: {'; '.join(checks)}."
    return DatasetNotFoundError(
        f"{reason} Point --data-root (root=...) at the folder that holds it, or pass --download "
        f"(download=True) to fetch it.{extra}", reason)


def _open(name: str, root: Optional[str], download: bool, build: Callable, extra: str = ""):
    """Try ``build(folder, download=False)`` on each candidate folder; download into the
    first one when asked and nothing was found."""
    base = Path(root or DEFAULT_ROOT).expanduser()
    candidates = [base, base / name]
    checks = []
    for folder in candidates:
        if not folder.is_dir():
            checks.append(f"{folder.resolve()} does not exist")
            continue
        try:
            return build(folder, False)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            checks.append(f"{folder.resolve()} failed torchvision's file and checksum check "
                          f"({' '.join(str(exc).split())[:120]}): its files are missing, partial "
                          f"or another version")
    if not download:
        raise _missing(name, checks, extra)
    base.mkdir(parents=True, exist_ok=True)
    return build(base, True)


def _cifar(name: str, cls_name: str, root: Optional[str], download: bool) -> DatasetBundle:
    from torchvision import datasets

    cls = getattr(datasets, cls_name)
    extra = (" Offline, use the CIFAR-10 subset: --dataset npz:../shared/data/cifar10_subset.npz."
             if name == "cifar10" else "")
    train = _open(name, root, download, lambda d, dl: cls(str(d), train=True, download=dl), extra)
    test = _open(name, root, download, lambda d, dl: cls(str(d), train=False, download=dl), extra)
    return DatasetBundle(name, train.data, np.asarray(train.targets, dtype=np.int64),
                         test.data, np.asarray(test.targets, dtype=np.int64),
                         num_classes=len(train.classes), classes=list(train.classes))


@DATASETS.register("cifar10")
def load_cifar10(root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """CIFAR-10: 50,000 / 10,000 images (N, 32, 32, 3), 10 classes."""
    return _cifar("cifar10", "CIFAR10", root, download)


@DATASETS.register("cifar100")
def load_cifar100(root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """CIFAR-100: 50,000 / 10,000 images (N, 32, 32, 3), 100 fine classes."""
    return _cifar("cifar100", "CIFAR100", root, download)


def _gtsrb_split(ds) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        images.append(resize(np.asarray(img.convert("RGB")), GTSRB_SIZE))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@DATASETS.register("gtsrb")
def load_gtsrb(root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """GTSRB: 26,640 / 12,630 images resized to (N, 32, 32, 3), 43 classes."""
    from torchvision.datasets import GTSRB

    train = _open("gtsrb", root, download, lambda d, dl: GTSRB(str(d), split="train", download=dl))
    test = _open("gtsrb", root, download, lambda d, dl: GTSRB(str(d), split="test", download=dl))
    x_train, y_train = _gtsrb_split(train)
    x_test, y_test = _gtsrb_split(test)
    return DatasetBundle("gtsrb", x_train, y_train, x_test, y_test, num_classes=43)

"""``tiny-imagenet`` and ``imagenette``: ImageFolder-style folders read into memory at 64x64.

Layouts searched under ``root`` (default ``./data``):

* tiny-imagenet: ``tiny-imagenet-200/`` (or ``tiny/``, ``tiny-imagenet/``, root itself) with
  ``train/<wnid>/images/*.JPEG`` and either ``val/val_annotations.txt`` +
  ``val/images/*.JPEG`` (the official layout) or ``val/<wnid>/...``. 200 classes.
* imagenette: ``imagenette2-320/`` (or ``imagenette2-160/``, ``imagenette2/``,
  ``imagenette/``, root itself) with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.
  10 classes, named (tench, English springer, ...) when the wnids are the standard ones.

Images are decoded with cv2 and resized to 64x64 (area interpolation when shrinking).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..registry import DATASETS
from .base import DEFAULT_ROOT, DatasetBundle, DatasetNotFoundError
from .images import read_class_folders, read_image

__all__ = ["load_tiny_imagenet", "load_imagenette", "SIZE"]

SIZE = 64
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGENETTE_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}


def _find(root: Optional[str], subdirs: tuple[str, ...]) -> tuple[Optional[Path], list[Path]]:
    """First candidate folder holding ``train/`` and ``val/``, and the list searched."""
    base = Path(root or DEFAULT_ROOT).expanduser()
    candidates = [base / s for s in subdirs] + [base]
    for folder in candidates:
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return folder, candidates
    return None, candidates


def _missing(name: str, searched: list[Path]) -> DatasetNotFoundError:
    where = ", ".join(str(p.resolve()) for p in searched)
    return DatasetNotFoundError(
        f"dataset {name!r}: expected a folder with train/ and val/ sub-folders, found none among "
        f"{where}. Point --data-root (root=...) at the folder that holds it, or pass --download "
        "(download=True) to fetch it.")


def _tiny_val(val_dir: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    annotations = val_dir / "val_annotations.txt"
    if not annotations.is_file():
        x, y, _ = read_class_folders(val_dir, SIZE, classes)
        return x, y
    index = {wnid: i for i, wnid in enumerate(classes)}
    images, labels = [], []
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise ValueError(f"{annotations}:{line_no}: expected '<file>\\t<wnid>\\t...' with a wnid "
                             f"from train/, found {line!r}.")
        images.append(read_image(val_dir / "images" / fields[0], SIZE))
        labels.append(index[fields[1]])
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@DATASETS.register("tiny-imagenet")
def load_tiny_imagenet(root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """Tiny-ImageNet: 100,000 train / 10,000 val (used as test) images (N, 64, 64, 3), 200 classes."""
    subdirs = ("tiny-imagenet-200", "tiny", "tiny-imagenet")
    folder, searched = _find(root, subdirs)
    if folder is None and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_URL, str(Path(root or DEFAULT_ROOT).expanduser()))
        folder, searched = _find(root, subdirs)
    if folder is None:
        raise _missing("tiny-imagenet", searched)
    x_train, y_train, classes = read_class_folders(folder / "train", SIZE)
    x_test, y_test = _tiny_val(folder / "val", classes)
    return DatasetBundle("tiny-imagenet", x_train, y_train, x_test, y_test, len(classes),
                         classes=classes)


@DATASETS.register("imagenette")
def load_imagenette(root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """Imagenette: ~9,469 train / 3,925 val (used as test) images (N, 64, 64, 3), 10 classes."""
    subdirs = ("imagenette2-320", "imagenette2-160", "imagenette2", "imagenette")
    folder, searched = _find(root, subdirs)
    if folder is None and download:
        from torchvision.datasets import Imagenette

        Imagenette(str(Path(root or DEFAULT_ROOT).expanduser()), size="320px", download=True)
        folder, searched = _find(root, subdirs)
    if folder is None:
        raise _missing("imagenette", searched)
    x_train, y_train, wnids = read_class_folders(folder / "train", SIZE)
    x_test, y_test, _ = read_class_folders(folder / "val", SIZE, wnids)
    return DatasetBundle("imagenette", x_train, y_train, x_test, y_test, len(wnids),
                         classes=[IMAGENETTE_NAMES.get(w, w) for w in wnids])

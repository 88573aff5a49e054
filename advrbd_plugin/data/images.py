"""Image files -> uint8 arrays: decoding, resizing and ImageFolder-style class folders."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "resize", "read_image", "list_images", "read_class_folders"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3); area interpolation when shrinking, else bilinear."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def read_image(path: Path, size: int) -> np.ndarray:
    """Decode an image file (grayscale becomes 3 channels) -> uint8 RGB (size, size, 3)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"could not decode image {path}: expected a readable image file "
                         f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Remove or replace it.")
    return resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_class_folders(split_dir: Path, size: int, classes: Optional[Sequence[str]] = None
                       ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``split_dir/<class>/**/<image>`` -> (x uint8 (N, size, size, 3), y int64 (N,), classes).

    ``classes`` fixes the label order (e.g. the train split's); default: sorted sub-folders.
    """
    if classes is None:
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for path in list_images(folder):
            images.append(read_image(path, size))
            labels.append(label)
    if not images:
        raise ValueError(f"{split_dir}: expected class sub-folders holding images "
                         f"(<class>/<image>.png|jpg), found none.")
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(classes)

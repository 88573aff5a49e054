"""``digits``: scikit-learn's embedded 8x8 handwritten digits, the offline default.

1,797 images, values 0..16, rescaled to uint8 0..255 and upsampled to 16x16 with
bilinear interpolation: (N, 16, 16, 1). A stratified 80/20 split with seed 0 gives
1,437 train and 360 test images; 10 classes "0".."9". No file or network access.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from ..registry import DATASETS
from .base import DatasetBundle

__all__ = ["load_digits"]

SIZE = 16
SEED = 0


@DATASETS.register("digits")
def load_digits(root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """The digits bundle; ``root`` and ``download`` are ignored (the data ship with scikit-learn)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    raw = sklearn_digits()
    small = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)
    x = np.stack([cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for img in small])
    y = raw.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=SEED)
    return DatasetBundle("digits", x[train, ..., None], y[train], x[test, ..., None], y[test],
                         num_classes=10, classes=[str(d) for d in range(10)])

"""Dataset loaders. Importing this package registers every loader in ``DATASETS``.

``load_dataset(spec)`` returns a :class:`DatasetBundle` (uint8 NHWC images, int64 labels):

* ``npz:PATH`` (or any spec ending in ``.npz``): a NumPy archive, see :mod:`.npz`;
* a registered name: ``digits`` (offline, embedded), ``cifar10``, ``cifar100``, ``gtsrb``
  (torchvision), ``tiny-imagenet``, ``imagenette`` (folders under ``root``).
"""
from __future__ import annotations

from typing import Optional

from ..registry import DATASETS
from . import digits, folders, torchvision_sets
from .base import (DEFAULT_ROOT, DatasetBundle, DatasetNotFoundError, channel_stats,
                   shared_data_dir, shared_data_path)
from .npz import load_npz

__all__ = ["DEFAULT_ROOT", "DatasetBundle", "DatasetNotFoundError", "channel_stats", "digits",
           "folders", "load_dataset", "load_npz", "shared_data_dir", "shared_data_path",
           "torchvision_sets"]


def load_dataset(spec: str, root: Optional[str] = None, download: bool = False) -> DatasetBundle:
    """Load ``spec`` (``npz:PATH`` or a registered dataset name).

    root: folder the named loaders search (default ``./data``); ignored for npz and digits.
    download: let torchvision / folder loaders fetch missing data (needs network).
    Raises DatasetNotFoundError when the data are absent, UnknownNameError for a bad name.
    """
    spec = str(spec)
    if spec.lower().startswith("npz:"):
        return load_npz(spec[4:])
    if spec.lower().endswith(".npz"):
        return load_npz(spec)
    return DATASETS.get(spec)(root=root, download=download)

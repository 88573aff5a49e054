"""``npz:PATH``: a dataset stored as one NumPy archive (the offline format of ../shared/data).

Required arrays: ``x_train``, ``x_test`` (uint8 NHWC, or NCHW when that is unambiguous,
or (N, H, W) for grayscale) and ``y_train``, ``y_test`` (integer (N,)); optional
``classes`` (a string array of class names). Other arrays are ignored.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import RecordError, is_zip
from .base import DatasetBundle, DatasetNotFoundError, shared_data_path

__all__ = ["load_npz", "to_nhwc"]

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def to_nhwc(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 (N, H, W, C), (N, C, H, W) or (N, H, W) -> uint8 (N, H, W, C), C in {1, 3}.

    A 4-D array whose axes 1 and 3 could both be channels is rejected as ambiguous.
    """
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8 (values 0..255), found {x.dtype}. "
                         "Save images as uint8, e.g. (x * 255).round().astype(np.uint8) for [0, 1] floats.")
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        last, second = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
        if last and not second:
            return x
        if second and not last:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    raise ValueError(f"{what}: expected images as (N, H, W, C) with C in {{1, 3}} "
                     f"(or unambiguous (N, C, H, W), or (N, H, W)), found shape {x.shape}. "
                     "Save them as NHWC uint8: x.transpose(0, 2, 3, 1) converts NCHW.")


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(f"{what}: expected integer class indices of shape (N,), found dtype "
                         f"{y.dtype} and shape {y.shape}. Save labels with y.astype(np.int64).")
    return y.astype(np.int64, copy=False)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def load_npz(path: Union[str, Path]) -> DatasetBundle:
    """Load ``path`` (an .npz archive) into a DatasetBundle named after the file stem.

    num_classes = len(classes) when ``classes`` is stored, else max label + 1.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        hint = ""
        elsewhere = shared_data_path(path.name)
        if elsewhere is not None:
            hint = f" A file of that name exists at {elsewhere}: use 'npz:{elsewhere}'."
        raise DatasetNotFoundError(
            f"npz dataset: no file at {path} (resolved to {path.resolve()}).{hint} Pass an "
            "existing .npz path as 'npz:PATH' (relative paths start from the working directory), "
            "e.g. 'npz:../shared/data/cifar10_subset.npz'.")
    if not is_zip(path):
        raise RecordError(f"npz dataset {path}: expected a NumPy .npz archive (a zip file written by "
                          "np.savez / np.savez_compressed), found a file that is not a zip archive.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in REQUIRED if k not in archive.files]
            if missing:
                raise RecordError(
                    f"npz dataset {path}: expected arrays {', '.join(REQUIRED)} (and optional "
                    f"'classes'), missing {', '.join(missing)}; found {', '.join(archive.files) or 'none'}. "
                    "Write it with np.savez_compressed(path, x_train=..., y_train=..., x_test=..., y_test=...).")
            arrays = {k: archive[k] for k in REQUIRED}
            classes = archive["classes"] if "classes" in archive.files else None
    except RecordError:
        raise
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise RecordError(f"npz dataset {path}: an array could not be read ({_one_line(exc)}); "
                              f"the file is damaged or not written by np.savez") from None
        raise RecordError(f"npz dataset {path}: an array is stored as Python objects, which we do not "
                          "unpickle. Store numbers as numeric arrays and 'classes' as a string array "
                          "(np.array(names, dtype=str)).") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, IndexError, TypeError,
            NotImplementedError, OverflowError, MemoryError, RuntimeError) as exc:
        raise RecordError(f"npz dataset {path}: damaged or truncated archive ({type(exc).__name__}: "
                          f"{_one_line(exc)}); copy it again or re-save it with np.savez") from None
    x_train = to_nhwc(arrays["x_train"], f"{path.name}: x_train")
    x_test = to_nhwc(arrays["x_test"], f"{path.name}: x_test")
    y_train = _labels(arrays["y_train"], f"{path.name}: y_train")
    y_test = _labels(arrays["y_test"], f"{path.name}: y_test")
    if classes is not None:
        names = [str(c) for c in np.asarray(classes).reshape(-1)]
        num_classes = len(names)
    else:
        names = None
        num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return DatasetBundle(path.stem, x_train, y_train, x_test, y_test, num_classes, classes=names)

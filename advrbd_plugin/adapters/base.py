"""What every adapter returns, the Adapter interface, and shared reading/writing helpers.

An adapter translates one toolbox's attack format into our types (``load``) and writes
a defense's outputs in that toolbox's layout (``write``). Adapters register in
``ADAPTERS`` by format name; third-party ones come in through the entry-point group
``advrbd_plugin.adapters``.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..config import atomic_output, atomic_write_text
from ..types import DefenseResult, PoisonedDataset, TriggeredTestSet
from .safe_load import RecordError

__all__ = ["ToolboxRecord", "Adapter", "strip_module_prefix", "load_weights", "read_png",
           "atomic_torch_save", "csv_text", "write_csv", "clean_bundle"]


@dataclass
class ToolboxRecord:
    """A toolbox's attack output in our types.

    train: the poisoned training set, with ``truth`` (GroundTruth) for evaluation.
    x_test, y_test: the clean test set, uint8 (N, H, W, C) and int64 (N,), or None.
    triggered: the backdoor test set (ASR / RA), or None when it cannot be rebuilt.
    model: the record's trained model in eval mode, or None (absent, or an architecture
        whose weights do not map onto our models).
    model_name: our MODELS name for the record's architecture, or None.
    num_classes: K.
    clean: clean samples a defense that needs clean data may use, or None.
    meta: toolbox, toolbox_attack, attack (ours or None), target, dataset, paths, notes.
    """

    train: PoisonedDataset
    x_test: Optional[torch.Tensor]
    y_test: Optional[torch.Tensor]
    triggered: Optional[TriggeredTestSet]
    model: Optional[nn.Module]
    model_name: Optional[str]
    num_classes: int
    clean: Optional[PoisonedDataset] = None
    meta: dict = field(default_factory=dict)


class Adapter:
    """One toolbox format.

    load(record, trust_pickles=False, **options) -> ToolboxRecord
    write(record, result, metrics, defense=..., out=None, seed=0) -> dict of what was
        written (paths) and, for in-memory formats, the result objects.
    """

    name: ClassVar[str] = "adapter"
    #: True when ``load`` takes a path (usable from the command line).
    on_disk: ClassVar[bool] = True
    #: The toolbox's own training recipe (train keys) for its records' models, layered over
    #: our dataset recipe; None: ours.
    train_recipe: ClassVar[Optional[dict]] = None

    def load(self, record: Any, *, trust_pickles: bool = False, **options) -> ToolboxRecord:
        raise NotImplementedError

    def write(self, record: ToolboxRecord, result: DefenseResult, metrics: Mapping[str, Any], *,
              defense: str, out: Optional[str | os.PathLike] = None, seed: int = 0) -> dict:
        raise NotImplementedError

    def default_output(self, record: ToolboxRecord, defense: str) -> Optional[Path]:
        """Where ``write`` puts its files when ``out`` is None (None: nowhere on disk)."""
        return None

    def extras_folder(self, record: ToolboxRecord, defense: str,
                      out: Optional[str | os.PathLike] = None) -> Optional[Path]:
        """Where our own files (metrics.json, config.yaml, poison_report.csv, stage
        checkpoints) go: by default next to the toolbox outputs."""
        return Path(out) if out is not None else self.default_output(record, defense)


# -- models -------------------------------------------------------------------------------
def strip_module_prefix(state: Mapping[str, Any]) -> dict:
    """Drop the ``module.`` prefix DataParallel adds to every key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_weights(model: nn.Module, state: Any, what: str) -> Optional[str]:
    """Load ``state`` into ``model`` strictly; returns None, or why it does not fit."""
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return f"{what} is not a state dict (str -> tensor)"
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    shapes = [k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", extra), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(sorted(keys)[:4])}{' ...' if len(keys) > 4 else ''}")
        return f"{what} does not fit {type(model).__name__} ({'; '.join(parts)})"
    model.load_state_dict(state, strict=True)
    return None


# -- images ---------------------------------------------------------------------------------
def read_png(path: Path, shape: Sequence[int]) -> np.ndarray:
    """Read an image file as uint8 (H, W, C) and check it has ``shape`` (H, W, C)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if shape[2] == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RecordError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if tuple(arr.shape) != tuple(shape):
        raise RecordError(f"{path}: expected an image of shape {tuple(shape)} (H, W, C), "
                          f"found {tuple(arr.shape)}")
    return arr


# -- writing ----------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save via a temp file in the same folder, then rename."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def csv_text(rows: Sequence[Sequence[Any]], lineterminator: str = "\n") -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=lineterminator).writerows(rows)
    return buf.getvalue()


def write_csv(path: Path, rows: Sequence[Sequence[Any]], lineterminator: str = "\n") -> None:
    atomic_write_text(path, csv_text(rows, lineterminator))


# -- clean data -------------------------------------------------------------------------------
def clean_bundle(clean: Any, name: Optional[str], root: Optional[str | os.PathLike],
                 download: bool = False):
    """A DatasetBundle from ``clean`` (a bundle, ``npz:PATH`` or a registered name), else
    from the registered dataset ``name`` under ``root``."""
    from ..data import DatasetBundle, load_dataset

    if isinstance(clean, DatasetBundle):
        return clean
    spec = clean if clean is not None else name
    if spec is None:
        raise ValueError("no clean dataset: pass clean=<DatasetBundle | npz:PATH | dataset name>")
    return load_dataset(str(spec), root=None if root is None else str(root), download=download)

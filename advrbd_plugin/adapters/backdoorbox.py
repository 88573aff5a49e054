"""BackdoorBox (THUYimingLi/BackdoorBox): in-process datasets in, model and split out.

BackdoorBox writes no attack record: ``attack.get_poisoned_dataset()`` returns
``(poisoned_train, poisoned_test)``, torchvision datasets (``PoisonedCIFAR10``,
``PoisonedMNIST``, ``PoisonedDatasetFolder`` in ``core/attacks/*.py``) that add the
trigger on the fly in ``__getitem__`` for indices in ``.poisoned_set`` (a frozenset) and
keep the clean labels in ``.targets`` (``.samples`` for folders). The adapter reads every
item once (so build them with deterministic transforms, ``ToTensor()`` and no
``Normalize``, or pass ``undo_normalize=(mean, std)``), takes the ground truth from
``.poisoned_set``, and the clean test set from ``clean_test`` or from the poisoned test set
with its poisoned set emptied.

BackdoorBox poisons every test sample (``poisoned_rate=1.0``), target class included, and
its ASR counts them all; we report our ASR (non-target samples only) and, as
``asr_backdoorbox``, theirs.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..registry import ADAPTERS
from ..types import GroundTruth, PoisonedDataset, TriggeredTestSet, as_tensor_images, to_uint8_nhwc
from .base import Adapter, ToolboxRecord, atomic_torch_save
from .names import our_attack

__all__ = ["BackdoorBox", "materialize"]


@ADAPTERS.register("backdoorbox")
class BackdoorBox(Adapter):
    """``load((poisoned_train, poisoned_test))`` or ``load(attack)`` -> ToolboxRecord."""

    name = "backdoorbox"
    on_disk = False

    def load(self, record: Any, *, trust_pickles: bool = False, clean_test: Any = None,
             clean_train: Any = None, num_classes: Optional[int] = None, target: Optional[int] = None,
             attack: Optional[str] = None, model: Optional[nn.Module] = None,
             model_name: Optional[str] = None, mean: Optional[Sequence[float]] = None,
             std: Optional[Sequence[float]] = None,
             undo_normalize: Optional[tuple[Sequence[float], Sequence[float]]] = None) -> ToolboxRecord:
        """record: ``(poisoned_train, poisoned_test)`` or a BackdoorBox attack object (its
        ``get_poisoned_dataset()`` and ``get_model()`` are used).

        clean_test / clean_train: benign datasets (clean test accuracy; clean data for
            defenses that need it). num_classes, target: inferred when None.
        attack: the BackdoorBox attack class name (e.g. ``PhysicalBA``) when passing datasets.
        model / model_name: the trained model and our MODELS name of its architecture.
        mean, std: normalization for training (default: the training images' statistics).
        undo_normalize: (mean, std) of a ``Normalize`` in the datasets' transform.
        """
        if hasattr(record, "get_poisoned_dataset"):
            attack = attack or type(record).__name__
            model = model if model is not None else _get_model(record)
            record = record.get_poisoned_dataset()
        if not (isinstance(record, (tuple, list)) and len(record) == 2):
            raise TypeError("backdoorbox: expected (poisoned_train, poisoned_test) from "
                            "get_poisoned_dataset() or the attack object")
        ptrain, ptest = record
        x, y = materialize(ptrain, "poisoned train set", undo_normalize)
        true = _true_labels(ptrain, "poisoned train set")
        poison_idx = _poisoned_set(ptrain, len(y), "poisoned train set")
        if target is None:
            target = _infer_target(y, poison_idx)
        k = int(num_classes or max(int(y.max()), int(true.max()), target if target is not None else 0) + 1)
        poison = torch.zeros(len(y), dtype=torch.bool)
        poison[poison_idx] = True
        ours = our_attack(attack, self.name) if attack else None
        if mean is None or std is None:
            mean, std = _stats(x)
        truth = GroundTruth(true, poison, torch.zeros_like(poison), target, ours or attack or "unknown")
        train = PoisonedDataset(x, y, k, mean, std, truth, name="backdoorbox:train")

        tx, ty = materialize(ptest, "poisoned test set", undo_normalize)
        ttrue = _true_labels(ptest, "poisoned test set")
        tidx = _poisoned_set(ptest, len(ty), "poisoned test set")
        triggered = TriggeredTestSet(tx[tidx], ty[tidx], ttrue[tidx], k, attack=ours or attack or "")
        if clean_test is None:
            clean_test = copy.copy(ptest)
            clean_test.poisoned_set = frozenset()
        cx, cy = materialize(clean_test, "clean test set", undo_normalize)
        clean = None
        if clean_train is not None:
            ex, ey = materialize(clean_train, "clean train set", undo_normalize)
            clean = PoisonedDataset(ex, ey, k, mean, std, name="backdoorbox:clean")
        meta = {"toolbox": self.name, "record": None, "toolbox_attack": attack, "attack": ours,
                "target": target, "dataset": None, "asr_counts_target_class": True,
                "clean_pool": False,
                "model_note": "model given" if model is not None else "no model given"}
        return ToolboxRecord(train, to_uint8_nhwc(cx), cy, triggered, model, model_name, k, clean=clean,
                             meta=meta)

    def write(self, record: ToolboxRecord, result, metrics: Mapping[str, Any], *, defense: str,
              out=None, seed: int = 0) -> dict:
        """The cleaned model and BackdoorBox's filter split: ``poisoned_ids`` (flagged) and
        ``benign_ids``; with ``out``, also ``<out>/<defense>_model.pth`` (a state dict)."""
        written: dict[str, Any] = {"model": result.model}
        if result.poison_mask is not None:
            flagged = result.poison_mask.bool().cpu()
            written["poisoned_ids"] = torch.nonzero(flagged).flatten().tolist()
            written["benign_ids"] = torch.nonzero(~flagged).flatten().tolist()
        if out is not None:
            path = Path(out) / f"{defense}_model.pth"
            atomic_torch_save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, path)
            written["model_file"] = path
        return written


def _get_model(attack: Any) -> Optional[nn.Module]:
    try:
        return attack.get_model()
    except Exception:
        return None


def materialize(dataset: Any, what: str,
                undo_normalize: Optional[tuple[Sequence[float], Sequence[float]]] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every ``dataset[i]`` once: (uint8 NHWC or float NCHW in [0, 1], int64 labels).

    Items may be PIL images, uint8 arrays/tensors (HWC, or CHW tensors) or float CHW
    tensors (as ``ToTensor`` gives).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError(f"backdoorbox: the {what} is empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        xs.append(_as_array(item[0], what))
        ys.append(int(item[1]))
    if any(a.dtype != xs[0].dtype for a in xs):
        raise ValueError(f"backdoorbox: the {what} mixes image types (PIL/uint8 and float); use "
                         f"one transform for poisoned and clean samples")
    x = torch.from_numpy(np.stack(xs))
    if x.dtype != torch.uint8 and undo_normalize is not None:
        m, s = (torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in undo_normalize)
        x = x * s + m
    try:
        x = as_tensor_images(x, f"backdoorbox {what}")
    except ValueError as exc:
        raise ValueError(f"{exc} If the transform ends with Normalize(mean, std), pass "
                         f"undo_normalize=(mean, std).") from None
    return x, torch.tensor(ys, dtype=torch.long)


def _as_array(img: Any, what: str) -> np.ndarray:
    if hasattr(img, "convert") and hasattr(img, "mode"):  # PIL image
        arr = np.asarray(img.convert("L" if img.mode in ("L", "1", "I", "F") else "RGB"), np.uint8)
        return arr[..., None] if arr.ndim == 2 else arr
    if isinstance(img, torch.Tensor):
        if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.permute(1, 2, 0)
        img = img.detach().cpu().numpy()
    if isinstance(img, np.ndarray):
        if img.dtype == np.uint8:
            return img[..., None] if img.ndim == 2 else img
        return img.astype(np.float32)[None] if img.ndim == 2 else img.astype(np.float32)
    raise TypeError(f"backdoorbox: {what} items should be PIL images, arrays or tensors, found "
                    f"{type(img).__name__}")


def _true_labels(dataset: Any, what: str) -> torch.Tensor:
    if hasattr(dataset, "targets"):
        return torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)
    if hasattr(dataset, "samples"):
        return torch.tensor([int(s[1]) for s in dataset.samples], dtype=torch.long)
    raise ValueError(f"backdoorbox: the {what} has neither .targets nor .samples, so its clean "
                     f"labels are unknown; pass BackdoorBox's Poisoned* datasets")


def _poisoned_set(dataset: Any, n: int, what: str) -> torch.Tensor:
    ids = getattr(dataset, "poisoned_set", None)
    if ids is None:
        raise ValueError(f"backdoorbox: the {what} has no .poisoned_set; pass the datasets "
                         f"returned by the attack's get_poisoned_dataset()")
    idx = torch.tensor(sorted(int(i) for i in ids), dtype=torch.long)
    if len(idx) and (int(idx[0]) < 0 or int(idx[-1]) >= n):
        raise ValueError(f"backdoorbox: the {what}'s poisoned_set has indices outside [0, {n})")
    return idx


def _infer_target(labels: torch.Tensor, idx: torch.Tensor) -> Optional[int]:
    values = labels[idx].unique()
    return int(values[0]) if len(values) == 1 else None


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    f = x.float().div(255.0).permute(0, 3, 1, 2) if x.dtype == torch.uint8 else x.float()
    return (tuple(f.mean((0, 2, 3)).tolist()),
            tuple(f.std((0, 2, 3)).clamp_min(1 / 255).tolist()))


"""Plain numpy arrays (ART users): arrays in, an ART-style ``detect_poison()`` result out.

In: ``x_train`` NHWC or NCHW (uint8 0..255, or floats in [0, 1] or 0..255), ``y_train`` as
class indices or one-hot rows, optional ``is_clean`` (ART's convention: 1 = clean) and a
clean test set; or a ``.npz`` holding those arrays (read with ``allow_pickle=False``).
Out: ``(report, is_clean)`` like ART's ``PoisonFilteringDefence.detect_poison()``:
``report`` maps each flagged index to its suspicion score (as ART's spectral-signature
defence does; None when the defense gives no scores), ``is_clean[i]`` is 1 for kept and 0
for flagged samples.
"""
from __future__ import annotations

import inspect
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..config import atomic_write_text
from ..registry import ADAPTERS
from ..types import GroundTruth, PoisonedDataset, TriggeredTestSet, to_uint8_nhwc
from .base import Adapter, ToolboxRecord
from .names import our_attack
from .safe_load import RecordError

__all__ = ["Arrays", "to_images", "to_labels", "detect_poison"]

NPZ_KEYS = ("x_train", "y_train", "is_clean", "x_test", "y_test")


@ADAPTERS.register("arrays")
class Arrays(Adapter):
    """``load(x_train, y=...)`` or ``load("data.npz")`` -> ToolboxRecord;
    ``write`` -> {"report", "is_clean", "model"}."""

    name = "arrays"

    def load(self, record: Any, *, trust_pickles: bool = False, y: Any = None,
             is_clean: Any = None, x_test: Any = None, y_test: Any = None,
             num_classes: Optional[int] = None, channels_first: Optional[bool] = None,
             target: Optional[int] = None, attack: Optional[str] = None,
             model: Optional[nn.Module] = None, model_name: Optional[str] = None,
             mean: Any = None, std: Any = None, x_triggered: Any = None,
             y_triggered: Any = None) -> ToolboxRecord:
        """record: ``x_train`` (array) or a path to an ``.npz`` with x_train, y_train and
        optionally is_clean, x_test, y_test.

        y: labels (N,) or one-hot (N, K). is_clean: (N,) 1 = clean, 0 = poisoned (truth).
        channels_first: layout when it cannot be inferred from the shape.
        x_triggered, y_triggered: triggered test inputs and their true labels (ASR needs
            ``target`` too). mean, std: normalization (default: the training statistics).
        """
        source = None
        if isinstance(record, (str, Path)):
            source = Path(record)
            arrays = _read_npz(source)
            record, y = arrays["x_train"], arrays.get("y_train", y)
            is_clean = arrays.get("is_clean", is_clean)
            x_test, y_test = arrays.get("x_test", x_test), arrays.get("y_test", y_test)
        if y is None:
            raise ValueError("arrays: labels are required (y=... or y_train in the .npz)")
        x = to_images(record, "x_train", channels_first)
        labels, k = to_labels(y, len(x), num_classes, "y_train")
        truth = None
        if is_clean is not None:
            clean_flags = np.asarray(is_clean).reshape(-1)
            if len(clean_flags) != len(x):
                raise ValueError(f"arrays: is_clean has {len(clean_flags)} entries for {len(x)} samples")
            poison = torch.from_numpy(clean_flags == 0)
            truth = GroundTruth(labels.clone(), poison, torch.zeros_like(poison), target,
                                our_attack(attack) or attack or "unknown")
        if mean is None or std is None:
            f = x.float().div(255.0).permute(0, 3, 1, 2) if x.dtype == torch.uint8 else x
            mean = tuple(f.mean((0, 2, 3)).tolist())
            std = tuple(f.std((0, 2, 3)).clamp_min(1 / 255).tolist())
        train = PoisonedDataset(x, labels, k, mean, std, truth, name="arrays:train")
        xt = yt = None
        if x_test is not None:
            xt = to_uint8_nhwc(to_images(x_test, "x_test", channels_first))
            yt, _ = to_labels(y_test, len(xt), k, "y_test")
        triggered = None
        if x_triggered is not None:
            if target is None:
                raise ValueError("arrays: x_triggered needs target= (the attacker's label)")
            xg = to_images(x_triggered, "x_triggered", channels_first)
            yg, _ = to_labels(y_triggered, len(xg), k, "y_triggered")
            triggered = TriggeredTestSet(xg, torch.full_like(yg, int(target)), yg, k,
                                         attack=our_attack(attack) or attack or "")
        meta = {"toolbox": self.name, "record": str(source) if source else None,
                "toolbox_attack": attack, "attack": our_attack(attack), "target": target,
                "dataset": None, "clean_pool": False,
                "model_note": "model given" if model is not None else "no model given"}
        return ToolboxRecord(train, xt, yt, triggered, model, model_name, k, meta=meta)

    def default_output(self, record: ToolboxRecord, defense: str) -> Optional[Path]:
        src = record.meta.get("record")
        return Path(src).with_name(f"{Path(src).stem}_{defense}") if src else None

    def write(self, record: ToolboxRecord, result, metrics: Mapping[str, Any], *, defense: str,
              out=None, seed: int = 0) -> dict:
        """{"report", "is_clean", "model"}; on disk (``out``, or next to the .npz) also
        ``art_detection.json`` with the report and is_clean."""
        report, is_clean = art_result(result, len(record.train))
        written: dict[str, Any] = {"report": report, "is_clean": is_clean, "model": result.model}
        folder = Path(out) if out is not None else self.default_output(record, defense)
        if folder is not None:
            written["art_detection"] = folder / "art_detection.json"
            atomic_write_text(written["art_detection"], json.dumps(
                {"report": {str(k): v for k, v in report.items()}, "is_clean": is_clean}))
        return written


def art_result(result, n: int) -> tuple[dict, list[int]]:
    """ART's (report, is_clean_lst) from a DefenseResult: report {index: score} over the
    flagged samples, is_clean[i] = 0 when flagged else 1."""
    flagged = (torch.zeros(n, dtype=torch.bool) if result.poison_mask is None
               else result.poison_mask.bool().cpu())
    scores = result.scores.float().cpu() if result.scores is not None else None
    report = {int(i): (float(scores[i]) if scores is not None else None)
              for i in torch.nonzero(flagged).flatten().tolist()}
    return report, [0 if f else 1 for f in flagged.tolist()]


def to_images(x: Any, what: str, channels_first: Optional[bool] = None) -> torch.Tensor:
    """Images as uint8 NHWC (uint8 input) or float NCHW in [0, 1] (float input).

    Accepts (N, H, W), NHWC or NCHW; the layout comes from ``channels_first`` or, when
    None, from which axis has 1 or 3 entries. Floats above 1 are read as 0..255.
    """
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 3:
        a = a[..., None] if not channels_first else a[:, None]
    if a.ndim != 4 or len(a) == 0:
        raise ValueError(f"arrays: {what} should be a non-empty (N, H, W, C) or (N, C, H, W) "
                         f"array, found shape {a.shape}")
    if channels_first is None:
        last, second = a.shape[3] in (1, 3), a.shape[1] in (1, 3)
        if last == second:
            raise ValueError(f"arrays: cannot tell the channel axis of {what} {a.shape}; pass "
                             f"channels_first=True (NCHW) or False (NHWC)")
        channels_first = second
    if a.dtype == np.uint8:
        a = a.transpose(0, 2, 3, 1) if channels_first else a
        return torch.from_numpy(np.ascontiguousarray(a))
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"arrays: {what} should hold numbers, found dtype {a.dtype}")
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255 or np.isnan(lo):
        raise ValueError(f"arrays: {what} values span [{lo:.4g}, {hi:.4g}]; pass un-normalized "
                         f"images in [0, 1] or 0..255")
    if hi > 1.0 + 1e-3:
        a = a / 255.0
    a = a if channels_first else a.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(a))


def to_labels(y: Any, n: int, num_classes: Optional[int], what: str) -> tuple[torch.Tensor, int]:
    """(int64 (N,) class indices, K) from indices or one-hot rows."""
    if y is None:
        raise ValueError(f"arrays: {what} is required")
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim == 2:
        k = num_classes or a.shape[1]
        a = a.argmax(1)
    elif a.ndim == 1:
        k = num_classes or int(a.max()) + 1
    else:
        raise ValueError(f"arrays: {what} should be (N,) or one-hot (N, K), found shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"arrays: {what} has {len(a)} labels for {n} images")
    return torch.as_tensor(a.astype(np.int64)), int(max(k, 2))


def _read_npz(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x_train" not in z.files:
                raise RecordError(f"{path}: expected an array named x_train (and y_train), found "
                                  f"{', '.join(z.files) or 'no arrays'}; write it with "
                                  f"np.savez(path, x_train=..., y_train=...)")
            return {k: z[k] for k in NPZ_KEYS if k in z.files}
    except RecordError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, IndexError,
            TypeError, NotImplementedError, OverflowError, MemoryError, RuntimeError) as exc:
        raise RecordError(f"{path}: not a readable .npz of plain arrays, or truncated "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); write it "
                          f"with np.savez(path, x_train=..., y_train=...)") from None


def detect_poison(x_train: Any, y_train: Any, defense: str = "advrbd", **kwargs) -> tuple[dict, list[int]]:
    """ART-style one call: run ``defense`` on the arrays, return (report, is_clean).

    kwargs go to :func:`advrbd_plugin.interop.run_record` (preset, sets, device, ...) and
    to ``Arrays.load`` (is_clean, x_test, y_test, channels_first, ...).
    """
    from ..interop import run_record

    load_keys = set(inspect.signature(Arrays.load).parameters) - {"self", "record", "trust_pickles"}
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in load_keys}
    out = run_record("arrays", x_train, defense=defense, load_options={"y": y_train, **options}, **kwargs)
    return out["outputs"]["report"], out["outputs"]["is_clean"]

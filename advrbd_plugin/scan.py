"""The defender's use case: their own (possibly poisoned) data, no attack, no truth.

``scan(data, model=...)`` loads an npz file or an ImageFolder-style folder, runs a
training-time defense (AdvrBD by default) on it and writes to ``out``:

* ``model.pt``: the cleaned model's state dict;
* ``suspicious.csv``: every sample ranked from most to least suspicious
  (rank, index, score, flagged, relabel, label, and the file path for folder data);
* ``scan.json``: the config, counts, stage timings and, when the data has a test
  split, the cleaned model's test accuracy.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import atomic_output, atomic_write_text
from .data.base import DatasetNotFoundError, channel_stats
from .data.images import list_images, read_class_folders
from .registry import DEFENSES
from .types import PoisonedDataset

__all__ = ["load_scan_data", "scan"]


def load_scan_data(path: str | os.PathLike, image_size: int = 32
                   ) -> tuple[PoisonedDataset, Optional[tuple[torch.Tensor, torch.Tensor]], Optional[list[str]]]:
    """npz (``x_train``/``y_train``, or ``x``/``y``; optional ``x_test``/``y_test``; uint8
    NHWC) or a folder of class sub-folders (``train/`` and ``test/`` inside it, or the
    classes directly), images resized to ``image_size``.

    Returns (train set without truth, (x_test uint8 NHWC, y_test) or None, file paths or None).
    """
    p = Path(path)
    if p.is_file():
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            xk, yk = ("x_train", "y_train") if "x_train" in keys else ("x", "y")
            if xk not in keys or yk not in keys:
                raise ValueError(f"scan data {p}: expected arrays x_train and y_train (or x and y) in "
                                 f"the npz, found {sorted(keys)}")
            x, y = z[xk], z[yk]
            test = (z["x_test"], z["y_test"]) if {"x_test", "y_test"} <= keys else None
        paths = None
    elif p.is_dir():
        train_dir = p / "train" if (p / "train").is_dir() else p
        x, y, classes = read_class_folders(train_dir, image_size)
        paths = [str(f) for c in classes for f in list_images(train_dir / c)]
        test = None
        if (p / "test").is_dir():
            xt, yt, _ = read_class_folders(p / "test", image_size, classes)
            test = (xt, yt)
    else:
        raise DatasetNotFoundError(f"scan data: no file or folder at {p}. Pass an .npz with x_train/"
                                   "y_train or a folder of class sub-folders.")
    if x.ndim == 3:  # grayscale N, H, W
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"scan data {p}: expected uint8 images shaped (N, H, W, C) with C in (1, 3), "
                         f"found {x.dtype} {x.shape}. Convert to 0..255 uint8 NHWC.")
    y = np.asarray(y).astype(np.int64).reshape(-1)
    num_classes = int(y.max()) + 1 if len(y) else 0
    if num_classes < 2:
        raise ValueError(f"scan data {p}: expected at least 2 classes (class sub-folders, or labels "
                         f"0..K-1 in y_train), found {num_classes}; a classifier needs two or more")
    if test is not None:
        num_classes = max(num_classes, int(np.asarray(test[1]).max()) + 1)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    mean, std = channel_stats(xt)
    data = PoisonedDataset(xt, torch.from_numpy(y), num_classes, mean=mean, std=std, name=p.name)
    if test is not None:
        tx = np.asarray(test[0])
        tx = tx[..., None] if tx.ndim == 3 else tx
        test = (torch.from_numpy(np.ascontiguousarray(tx)), torch.from_numpy(np.asarray(test[1]).astype(np.int64)))
    return data, test, paths


def scan(data: str | os.PathLike, model: Optional[str] = None, *, out: str | os.PathLike = "scan",
         defense: str = "advrbd", preset: Optional[str] = None, sets: Optional[list[str]] = None,
         image_size: int = 32, device: Optional[str] = None, quiet: bool = True,
         seed: Optional[int] = None) -> dict:
    """Run ``defense`` on the user's data and write the outputs listed in the module
    docstring to ``out``. Returns the scan.json summary."""
    from .engine import Engine, TrainConfig
    from .models import build_model
    from .runner import resolve_config

    cls = DEFENSES.get(defense)
    if cls.requires_clean_data or cls.needs_trained_model:
        raise ValueError(f"scan: defense {defense!r} needs reserved clean data or a trained model; "
                         "scan runs defenses that train from the suspicious data alone, e.g. advrbd, "
                         "abl, spectral, ac, scanft")
    ds, test, paths = load_scan_data(data, image_size)
    cfg = resolve_config(None, sets, dataset=f"scan:{data}", defense=defense, preset=preset,
                         model=model, device=device, quiet=quiet, seed=seed)
    engine = Engine(device=cfg["device"], precision=cfg["precision"], channels_last=cfg["channels_last"],
                    compile=cfg["compile"], quiet=cfg["quiet"], seed=cfg["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        net = build_model(cfg["model"], ds.num_classes, input_size=int(ds.images.shape[1]),
                          in_channels=ds.channels)
    out = Path(out)
    knobs = {k: v for k, v in cfg["defense"].items() if k != "name"}
    d = cls(knobs, engine=engine, train=TrainConfig(**cfg["train"]), checkpoint_dir=out / "checkpoints")
    engine.announce()
    t0 = time.perf_counter()
    result = d.apply(ds, net)
    seconds = time.perf_counter() - t0
    summary = {"data": str(data), "defense": defense, "model": cfg["model"], "samples": len(ds),
               "num_classes": ds.num_classes, "flagged": None, "relabeled": None,
               "seconds": round(seconds, 3), "timings": result.timings, "test_acc": None,
               "config": {"train": cfg["train"], "defense": cfg["defense"], "seed": cfg["seed"]},
               "engine": engine.describe()}
    if result.poison_mask is not None:
        summary["flagged"] = int(result.poison_mask.sum())
    if result.relabels is not None:
        summary["relabeled"] = int((result.relabels >= 0).sum())
    if test is not None:
        summary["test_acc"] = engine.accuracy(result.model, engine.data(test[0], ds.mean, ds.std), test[1])
    out.mkdir(parents=True, exist_ok=True)
    _save_state(result.model, out / "model.pt")
    atomic_write_text(out / "suspicious.csv", _ranking_csv(result, ds.labels, paths))
    atomic_write_text(out / "scan.json", json.dumps(summary, indent=2, default=str))
    return summary


def _ranking_csv(result, labels: torch.Tensor, paths: Optional[list[str]]) -> str:
    """Samples ordered by suspicion: flagged first, then by descending score."""
    n = len(labels)
    score = result.scores.float().nan_to_num(nan=float("-inf")) if result.scores is not None \
        else torch.zeros(n)
    flagged = result.poison_mask if result.poison_mask is not None else torch.zeros(n, dtype=torch.bool)
    relabel = result.relabels if result.relabels is not None else torch.full((n,), -1)
    order = sorted(range(n), key=lambda i: (not bool(flagged[i]), -float(score[i])))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "index", "score", "flagged", "relabel", "label"] + (["path"] if paths else []))
    for rank, i in enumerate(order, 1):
        w.writerow([rank, i, f"{float(score[i]):.6g}", int(flagged[i]), int(relabel[i]), int(labels[i])]
                   + ([paths[i]] if paths else []))
    return buf.getvalue()


def _save_state(model: torch.nn.Module, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)

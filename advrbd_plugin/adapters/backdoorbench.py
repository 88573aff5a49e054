"""BackdoorBench (SCLBD/BackdoorBench): attack records in, defense results out.

Reads ``record/<name>/`` as BackdoorBench writes it (``utils/save_load_attack.py``,
``utils/bd_dataset_v2.py``, ``attack/*.py``):

* ``attack_result.pt``: ``model_name``, ``num_classes``, ``model`` (state dict, maybe
  ``module.``-prefixed), ``data_path``, ``img_size`` (H, W, C), ``clean_data``,
  ``bd_train`` / ``bd_test`` (``poison_indicator``, ``original_index_array``,
  ``bd_data_container`` whose ``data_dict`` maps index -> {path, other_info: [bd_label,
  original_label]});
* ``info.pickle`` (the attack's arguments: ``attack``, ``attack_target``,
  ``attack_label_trans``);
* the poisoned PNGs ``bd_train_dataset/<original_label>/<index>.png`` and
  ``bd_test_dataset/...``; clean samples are not stored, so they come from the clean
  dataset (``data_path`` re-rooted at the BackdoorBench checkout, or ``data_root`` /
  ``clean`` given by the user). Stored PNG paths (relative to the checkout, or absolute
  from another machine) are re-rooted inside the record folder.

Ground truth: every stored train sample carries the trigger; WaNet / Input-aware noise
samples keep their label and are covers; SIG / LC poisons keep their label (clean-label).

Writes ``record/<name>/defense/<defense>/`` as BackdoorBench's defense scripts do:
``defense_result.pt`` ({model_name, num_classes, model}), ``<defense>_df.csv`` and
``<defense>_df_summary.csv`` (columns ``test_acc``, ``test_asr``, ``test_ra``, fractions
in [0, 1]; summary rows ``last``, ``valid_max``, ``exist_nan_value``) and, when the defense
flags samples, ``detection_info.csv`` (``record, TN, FP, FN, TP, TPR, FPR, target``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..registry import ADAPTERS
from ..types import GroundTruth, PoisonedDataset, TriggeredTestSet
from . import safe_load
from .base import (Adapter, ToolboxRecord, atomic_torch_save, clean_bundle, load_weights,
                   read_png, strip_module_prefix, write_csv)
from .names import our_attack
from .safe_load import RecordError

__all__ = ["BackdoorBench", "DATASETS", "MODELS", "NORMALIZATION"]

#: BackdoorBench dataset name -> our registered dataset.
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "gtsrb": "gtsrb", "tiny": "tiny-imagenet"}

#: Per-dataset normalization BackdoorBench trains with (its models expect it).
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "gtsrb": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "celeba": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "mnist": ((0.5,), (0.5,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: BackdoorBench model_name -> (our MODELS name, True when its state dict loads into ours
#: and computes the same function). Its resnet18/34 and mobilenet_v2 are torchvision's
#: ImageNet-stem models; ours are built for small images, so only the architecture maps.
MODELS = {
    "preactresnet18": ("preactresnet18", True),
    "resnet18": ("resnet18", False),
    "resnet34": ("resnet34", False),
    "mobilenet_v2": ("mobilenet_v2", False),
}

NOISE_MODE = {"wanet", "inputaware"}  # triggered samples whose label is kept are covers
REQUIRED = ("model_name", "num_classes", "model", "data_path", "img_size", "clean_data",
            "bd_train", "bd_test")
SPLIT_FOLDERS = {"bd_train": "bd_train_dataset", "bd_test": "bd_test_dataset"}


@ADAPTERS.register("backdoorbench")
class BackdoorBench(Adapter):
    """``load(record_dir)`` -> ToolboxRecord; ``write`` -> record/<name>/defense/<defense>/."""

    name = "backdoorbench"
    #: BackdoorBench's recipe (config/attack/prototype, config/defense): SGD lr 0.01 with
    #: cosine annealing, batch 128. Its preactresnet18 has no norm after the last block and
    #: diverges at our lr 0.1 without warm-up (loss 289 by step 5, NaN within an epoch).
    train_recipe = {"lr": 0.01, "schedule": "cosine", "warmup": 0.0, "batch_size": 128,
                    "momentum": 0.9, "weight_decay": 5e-4}

    def load(self, record: Any, *, trust_pickles: bool = False, clean: Any = None,
             data_root: Optional[str | os.PathLike] = None, download: bool = False) -> ToolboxRecord:
        """Read ``record`` (the ``record/<name>`` folder or its ``attack_result.pt``).

        clean: the clean dataset BackdoorBench rebuilt clean samples from (a DatasetBundle,
            ``npz:PATH`` or a registered name); default: ``clean_data`` under ``data_root``,
            or under ``data_path`` re-rooted at the checkout that holds ``record/``.
        trust_pickles: allow full pickle loads of files with non-allow-listed types.
        """
        folder = Path(record)
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"BackdoorBench record {str(folder)!r} not found; pass the "
                                    f"record/<name> folder the attack wrote")
        path = folder / "attack_result.pt"
        res = safe_load.load(path, trust=trust_pickles)
        _check_result(res, path)
        info = _load_info(folder / "info.pickle", trust_pickles)
        toolbox_attack = str(info["attack"]) if info.get("attack") else None
        label_trans = str(info.get("attack_label_trans") or "all2one")
        target = info.get("attack_target") if label_trans == "all2one" else None
        target = None if target is None else int(target)

        h, w, c = _img_size(res["img_size"], path)
        k = _int(res["num_classes"], path, "num_classes")
        dataset = str(res["clean_data"])
        root = data_root if data_root is not None or clean is not None else _reroot(folder, res["data_path"])
        bundle = clean_bundle(clean, DATASETS.get(dataset, dataset), root, download)
        if tuple(bundle.x_train.shape[1:]) != (h, w, c) or bundle.num_classes != k:
            raise RecordError(f"{path}: the record has img_size {(h, w, c)} and {k} classes, but "
                              f"the clean dataset {bundle.name!r} has {tuple(bundle.x_train.shape[1:])} "
                              f"and {bundle.num_classes}; pass the dataset the attack used")
        mean, std = NORMALIZATION.get(dataset, (bundle.mean, bundle.std))

        train_idx, train_img, bd, orig = _entries(res["bd_train"], "bd_train", folder, path,
                                                  (h, w, c), len(bundle.x_train))
        _check_order(bundle.y_train, train_idx, orig, path, bundle.name)
        images, labels = bundle.x_train.clone(), bundle.y_train.clone()
        images[train_idx] = train_img
        labels[train_idx] = bd
        triggered_mask = torch.zeros(len(labels), dtype=torch.bool)
        triggered_mask[train_idx] = True
        kept = labels == bundle.y_train
        name = (toolbox_attack or "").lower()
        if name in NOISE_MODE:
            poison, cover = triggered_mask & ~kept, triggered_mask & kept
        else:  # dirty- and clean-label (sig, lc: label kept) alike, every stored sample is poison
            poison, cover = triggered_mask, torch.zeros_like(triggered_mask)
        ours = our_attack(toolbox_attack, "backdoorbench")
        truth = GroundTruth(bundle.y_train.clone(), poison, cover, target,
                            ours or toolbox_attack or "unknown")
        train = PoisonedDataset(images, labels, k, mean, std, truth, name=f"backdoorbench:{folder.name}")

        test_idx, test_img, test_bd, test_orig = _entries(res["bd_test"], "bd_test", folder, path,
                                                          (h, w, c), len(bundle.x_test))
        _check_order(bundle.y_test, test_idx, test_orig, path, bundle.name)
        triggered = None
        if len(test_idx):
            triggered = TriggeredTestSet(test_img, test_bd, test_orig, k,
                                         attack=ours or toolbox_attack or "unknown")

        model, model_name, note = _model(res, k, (h, w, c), path)
        meta = {"toolbox": self.name, "record": str(folder), "toolbox_attack": toolbox_attack,
                "attack": ours, "target": target, "label_trans": label_trans, "dataset": dataset,
                "bb_model_name": str(res["model_name"]), "model_note": note,
                "img_size": [h, w, c], "clean_pool": True}
        return ToolboxRecord(train, bundle.x_test, bundle.y_test, triggered, model, model_name, k,
                             clean=bundle.train_set(), meta=meta)

    def default_output(self, record: ToolboxRecord, defense: str) -> Path:
        return Path(record.meta["record"]) / "defense" / defense

    def write(self, record: ToolboxRecord, result, metrics: Mapping[str, Any], *, defense: str,
              out=None, seed: int = 0) -> dict:
        """defense_result.pt, <defense>_df.csv, <defense>_df_summary.csv, detection_info.csv."""
        folder = Path(out) if out is not None else self.default_output(record, defense)
        written: dict[str, Any] = {}
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        bb_name = backdoorbench_model_name(str(metrics.get("model") or ""))
        written["defense_result"] = folder / "defense_result.pt"
        atomic_torch_save({"model_name": bb_name, "num_classes": record.num_classes, "model": state},
                          written["defense_result"])
        values = {k: metrics.get(k.replace("test_", "")) for k in ("test_acc", "test_asr", "test_ra")}
        values = {k: v for k, v in values.items() if v is not None}  # BackdoorBench drops None
        cols = list(values)
        written["df"] = folder / f"{defense}_df.csv"
        write_csv(written["df"], [[""] + cols, [0] + [_cell(values[c]) for c in cols]])
        written["df_summary"] = folder / f"{defense}_df_summary.csv"
        nan = [_is_nan(values[c]) for c in cols]
        write_csv(written["df_summary"], [
            [""] + cols,
            ["last"] + [_cell(values[c]) for c in cols],
            ["valid_max"] + [("" if n else _cell(values[c])) for c, n in zip(cols, nan)],
            ["exist_nan_value"] + [str(n) for n in nan],
        ])
        if result.poison_mask is not None and record.train.truth is not None:
            written["detection_info"] = folder / "detection_info.csv"
            write_csv(written["detection_info"], detection_rows(record, result.poison_mask),
                      lineterminator="\r\n")
        return written


def backdoorbench_model_name(ours: str) -> str:
    """The model_name BackdoorBench can rebuild for our model ``ours``; models without a
    weight-compatible BackdoorBench twin are named ``advrbd_plugin:<ours>``."""
    for bb, (name, exact) in MODELS.items():
        if exact and name == ours:
            return bb
    return f"advrbd_plugin:{ours}"


def detection_rows(record: ToolboxRecord, flagged: torch.Tensor) -> list[list]:
    """detection_info.csv rows. Positives are BackdoorBench's: every sample stored as
    backdoored (poison_indicator == 1), i.e. our poison and cover samples."""
    t = record.train.truth
    pos = (t.poison_mask | t.cover_mask).cpu()
    f = flagged.bool().cpu()
    tp, fp = int((f & pos).sum()), int((f & ~pos).sum())
    fn, tn = int((~f & pos).sum()), int((~f & ~pos).sum())
    tpr = tp / (tp + fn) if tp + fn else 0
    fpr = fp / (fp + tn) if fp + tn else 0
    target = "None" if t.target is None else t.target
    return [["record", "TN", "FP", "FN", "TP", "TPR", "FPR", "target"],
            [Path(record.meta["record"]).name, tn, fp, fn, tp, tpr, fpr, target]]


# -- reading helpers --------------------------------------------------------------------------
def _check_result(res: Any, path: Path) -> None:
    if not isinstance(res, Mapping):
        raise RecordError(f"{path}: expected the dict BackdoorBench's save_attack_result writes, "
                          f"found {type(res).__name__}")
    missing = [k for k in REQUIRED if k not in res]
    if missing:
        raise RecordError(f"{path}: not a BackdoorBench attack_result.pt (missing keys: "
                          f"{', '.join(missing)}); records of BackdoorBench v1 (x/y tensors) are "
                          f"not supported")
    if res["bd_train"] is None:
        raise RecordError(f"{path}: the record has no bd_train (the attack saved only its test "
                          f"set), so there is no poisoned training set to defend")


def _load_info(path: Path, trust: bool) -> dict:
    if not path.exists():
        return {}
    info = safe_load.load(path, trust=trust)
    if not isinstance(info, Mapping):
        raise RecordError(f"{path}: expected the attack's argument dict, found {type(info).__name__}")
    return dict(info)


def _int(value: Any, path: Path, what: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise RecordError(f"{path}: {what} should be an integer, found {value!r}") from None
    return out


def _img_size(value: Any, path: Path) -> tuple[int, int, int]:
    try:
        h, w, c = (int(v) for v in value)
    except (TypeError, ValueError):
        raise RecordError(f"{path}: img_size should be (H, W, C), found {value!r}") from None
    if c not in (1, 3) or h < 1 or w < 1:
        raise RecordError(f"{path}: img_size should be (H, W, C) with C in {{1, 3}}, found {value!r}")
    return h, w, c


def _reroot(folder: Path, data_path: Any) -> Path:
    """BackdoorBench's rule: the checkout holding ``record/`` + data_path from ``data`` on.
    The result must stay inside the checkout and outside the (untrusted) record."""
    checkout = folder.resolve().parent.parent
    text = str(data_path)
    rel = text[text.index("data"):] if "data" in text else text.lstrip("./")
    candidate = (checkout / rel).resolve()
    if checkout not in candidate.parents or folder.resolve() in (candidate, *candidate.parents):
        raise RecordError(f"{folder / 'attack_result.pt'}: data_path {text!r} points outside the "
                          f"BackdoorBench checkout {checkout}; pass the clean data with --data-root")
    return candidate


def _entries(state: Any, split: str, folder: Path, path: Path, shape: tuple[int, int, int],
             n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices, uint8 NHWC images, bd labels, original labels) of one split's stored
    poisoned samples, in ``original_index_array`` order."""
    if not isinstance(state, Mapping) or "bd_data_container" not in state:
        raise RecordError(f"{path}: {split} is not a prepro_cls_DatasetBD_v2 state (no bd_data_container)")
    indicator = np.asarray(state.get("poison_indicator"))
    if indicator.ndim != 1 or len(indicator) != n:
        raise RecordError(f"{path}: {split}.poison_indicator has length {indicator.size}, but the "
                          f"clean split has {n} samples; pass the dataset the attack used")
    container = state["bd_data_container"]
    data = container.get("data_dict") if isinstance(container, Mapping) else None
    if not isinstance(data, Mapping):
        raise RecordError(f"{path}: {split}.bd_data_container.data_dict is missing")
    keep = {int(i) for i in np.asarray(state.get("original_index_array", np.arange(n))).tolist()}
    sub = _split_folder(container, split)
    rows = []
    for key, value in data.items():
        idx = int(key)
        if idx not in keep:
            continue
        if not 0 <= idx < n:
            raise RecordError(f"{path}: {split} index {idx} is outside the {n} clean samples")
        if isinstance(value, Mapping):
            bd, orig = _labels(value.get("other_info"), path, split, idx)
            img = read_png(_png_path(folder, sub, orig, idx, value.get("path"), path), shape)
        elif isinstance(value, (tuple, list)) and len(value) == 3:  # in-RAM mode (PIL images)
            img = _in_ram_image(value[0], shape, path, split, idx)
            bd, orig = int(value[1]), int(value[2])
        else:
            raise RecordError(f"{path}: {split} entry {idx} is neither {{path, other_info}} nor "
                              f"(image, bd_label, label)")
        rows.append((idx, img, bd, orig))
    rows.sort(key=lambda r: r[0])
    if not rows:
        empty = torch.zeros((0,), dtype=torch.long)
        return empty, torch.zeros((0, *shape), dtype=torch.uint8), empty, empty
    idx, imgs, bd, orig = zip(*rows)
    return (torch.tensor(idx), torch.from_numpy(np.stack(imgs)), torch.tensor(bd),
            torch.tensor(orig))


def _in_ram_image(img: Any, shape: tuple[int, int, int], path: Path, split: str,
                  idx: int) -> np.ndarray:
    """An image stored in the record itself (in-RAM mode; only loadable with trust)."""
    if hasattr(img, "convert"):
        img = img.convert("L" if shape[2] == 1 else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if tuple(arr.shape) != shape:
        raise RecordError(f"{path}: {split} entry {idx}: expected an image of shape {shape}, "
                          f"found {tuple(arr.shape)}")
    return arr


def _split_folder(container: Mapping, split: str) -> str:
    saved = container.get("save_folder_path")
    return Path(str(saved)).name if saved else SPLIT_FOLDERS[split]


def _labels(other: Any, path: Path, split: str, idx: int) -> tuple[int, int]:
    try:
        return int(other[0]), int(other[1])
    except (TypeError, ValueError, IndexError):
        raise RecordError(f"{path}: {split} entry {idx}: other_info should be [bd_label, "
                          f"original_label], found {other!r}") from None


def _png_path(folder: Path, sub: str, orig: int, idx: int, stored: Any, path: Path) -> Path:
    """The PNG inside the record: <record>/<sub>/<orig>/<idx>.png, else the stored path
    (relative to the checkout, or absolute) when it lies inside the record folder."""
    inside = folder.resolve()
    candidates = [folder / sub / str(orig) / f"{idx}.png"]
    if stored:
        p = Path(str(stored))
        candidates.append(p if p.is_absolute() else inside.parent.parent / p)
    for cand in candidates:
        real = cand.resolve()
        if inside in real.parents and real.is_file():
            return real
    raise RecordError(f"{path}: the image of sample {idx} is missing: expected "
                      f"{candidates[0]} (stored path {stored!r})")


def _check_order(y: torch.Tensor, idx: torch.Tensor, orig: torch.Tensor, path: Path, name: str) -> None:
    if not len(idx):
        return
    bad = int((y[idx] != orig).sum())
    if bad:
        raise RecordError(f"{path}: {bad} of {len(idx)} stored samples have an original label that "
                          f"differs from the clean dataset {name!r} at the same index: the clean data "
                          f"is not the one (or not in the order) the attack used; pass it with "
                          f"--data-root or clean=")


def _model(res: Mapping, k: int, shape: tuple[int, int, int], path: Path):
    """(trained model or None, our model name or None, note). Weights that do not fit
    leave the model None (defenses that train from scratch still run)."""
    from ..models import build_model

    bb_name = str(res["model_name"])
    ours, exact = MODELS.get(bb_name, (None, False))
    if ours is None:
        return None, None, f"BackdoorBench model {bb_name!r} has no counterpart in our registry"
    if not exact:
        return None, ours, (f"BackdoorBench's {bb_name} (torchvision, ImageNet stem) differs from "
                            f"our {ours}; its weights were not loaded")
    model = build_model(ours, k, input_size=shape[0], in_channels=shape[2])
    state = res["model"]
    why = load_weights(model, strip_module_prefix(state) if isinstance(state, Mapping) else state,
                       f"{path}: model")
    if why is not None:
        return None, ours, f"{why}; weights not loaded"
    return model.eval(), ours, f"weights of {bb_name} loaded"


def _cell(v: Any) -> Any:
    return "nan_value" if _is_nan(v) else float(v)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)

"""backdoor-toolbox (vtu81/backdoor-toolbox): poisoned-set folders in, defended models out.

Reads ``poisoned_train_set/<dataset>/<folder>/`` as ``create_poisoned_set.py`` writes it:
``imgs`` (float N x C x H x W in [0, 1]), ``labels`` (after poisoning), ``poison_indices``
and ``cover_indices`` (lists), WaNet's ``identity_grid`` / ``noise_grid`` and the trained
model ``full_base_aug_seed=<seed>.pt`` (their ResNet-18: our ``resnet18`` up to key names).
The folder name (``utils/supervisor.py::get_poison_set_dir``) gives the attack
parameters: ``<type>_<rate>[_alpha=<a>][_cover=<c>][_trigger=<file>]_poison_seed=<s>``.

The toolbox stores no backdoor test set; it is rebuilt with our own code from those
parameters and the trigger files of the user's checkout (``triggers/``), on the clean
test split ``clean_set/<dataset>/test_split`` (or the clean dataset): patch triggers
stamp ``x + alpha * mask * (trigger - x)`` (mask: ``mask_<file>``, else the trigger's
non-black pixels), blends use our ``blend`` attack, SIG our ``sig`` attack (delta 30,
f 6), WaNet our ``wanet`` attack with the folder's warp grids.

Writes ``defended_<defense>_<model file>`` (a state dict in their key layout) and, when
the defense flags samples, ``cleansed_set_indices_other_<defense>_seed=<seed>`` (the
remaining indices), both into the folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..attacks.base import Attack
from ..attacks.triggers import load_image, stamp
from ..attacks.wanet import WaNet
from ..registry import ADAPTERS, ATTACKS
from ..types import GroundTruth, PoisonedDataset, as_tensor_images
from . import safe_load
from .base import (Adapter, ToolboxRecord, atomic_torch_save, clean_bundle, load_weights,
                   read_png, strip_module_prefix)
from .names import our_attack
from .safe_load import RecordError

__all__ = ["BackdoorToolbox", "parse_folder_name", "to_toolbox_keys", "from_toolbox_keys"]

FOLDER_RE = re.compile(
    r"^(?P<type>.+?)_(?P<rate>\d+\.\d+)(?:_alpha=(?P<alpha>\d+\.\d+))?(?:_cover=(?P<cover>\d+\.\d+))?"
    r"(?:_trigger=(?P<trigger>.+?))?(?:_poison_seed=(?P<poison_seed>\d+))?(?:_arch=(?P<arch>\w+))?$")

# Facts of the toolbox's config.py: per-dataset target class, TaCT classes, normalization.
TARGET = {"cifar10": 0, "gtsrb": 2, "imagenette": 0, "imagenet": 0}
SOURCE_CLASS, COVER_CLASSES = 1, (5, 7)
NUM_CLASSES = {"cifar10": 10, "gtsrb": 43, "imagenette": 10, "imagenet": 1000}
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "gtsrb": ((0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629)),
    "imagenette": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: Trigger file per poison type when the folder name has none (their trigger_default).
DEFAULT_TRIGGER = {"badnet": "badnet_patch_32.png", "basic": "badnet_patch_32.png",
                   "blend": "hellokitty_32.png", "adaptive_blend": "hellokitty_32.png",
                   "TaCT": "trojan_square_32.png", "trojan": "trojan_square_32.png",
                   "clean_label": "badnet_patch4_dup_32.png"}
#: adaptive_patch's test triggers and alphas per dataset.
ADAPTIVE_PATCH_TEST = {"cifar10": (("phoenix_corner2_32.png", "badnet_patch4_32.png"), (1.0, 1.0)),
                       "gtsrb": (("firefox_corner_32.png", "trojan_square_32.png"), (1.0, 1.0))}
PATCH_TYPES = {"badnet", "trojan", "TaCT", "clean_label", "basic"}
BLEND_TYPES = {"blend", "adaptive_blend"}
#: Their architecture names -> our MODELS name (weights load after key renaming).
ARCHS = {"ResNet18": "resnet18"}
DEFAULT_ARCH = {"cifar10": "ResNet18", "gtsrb": "ResNet18"}


def parse_folder_name(name: str) -> dict:
    """The attack parameters in a poisoned-set folder name (values as float/int/str)."""
    m = FOLDER_RE.match(name)
    if m is None:
        raise ValueError(f"folder name {name!r} does not follow backdoor-toolbox's naming "
                         f"<poison_type>_<rate>[_alpha=..][_cover=..][_trigger=..]_poison_seed=<s>")
    out: dict[str, Any] = {"poison_type": m["type"], "poison_rate": float(m["rate"])}
    for key, cast in (("alpha", float), ("cover", float), ("trigger", str), ("poison_seed", int),
                      ("arch", str)):
        if m[key] is not None:
            out["cover_rate" if key == "cover" else key] = cast(m[key])
    return out


def from_toolbox_keys(state: Mapping[str, torch.Tensor]) -> dict:
    """Their ResNet key names -> ours (``shortcut`` -> ``downsample``, ``linear`` -> ``fc``)."""
    out = {}
    for k, v in strip_module_prefix(state).items():
        k = k.replace(".shortcut.", ".downsample.")
        out["fc." + k[len("linear."):] if k.startswith("linear.") else k] = v
    return out


def to_toolbox_keys(state: Mapping[str, torch.Tensor]) -> dict:
    """Our ResNet key names -> theirs (inverse of ``from_toolbox_keys``)."""
    out = {}
    for k, v in state.items():
        k = k.replace(".downsample.", ".shortcut.")
        out["linear." + k[len("fc."):] if k.startswith("fc.") else k] = v
    return out


@ADAPTERS.register("backdoor-toolbox")
class BackdoorToolbox(Adapter):
    """``load(folder)`` -> ToolboxRecord; ``write`` -> defended model in the folder."""

    name = "backdoor-toolbox"

    def load(self, record: Any, *, trust_pickles: bool = False, clean: Any = None,
             data_root: Optional[str | os.PathLike] = None, download: bool = False,
             triggers_dir: Optional[str | os.PathLike] = None, test_alpha: Optional[float] = None,
             model_path: Optional[str | os.PathLike] = None) -> ToolboxRecord:
        """Read a ``poisoned_train_set/<dataset>/<folder>`` folder.

        clean: the clean dataset (DatasetBundle, ``npz:PATH`` or name) for the true labels of
            poisoned samples and, without ``clean_set/``, the test set; default: the
            dataset under ``data_root`` or the checkout's ``data/`` when present.
        triggers_dir: their trigger files (default: the checkout's ``triggers/``).
        test_alpha: test-time blend alpha (default: the folder's alpha, as their runner).
        model_path: the trained model (default: ``full_base_aug_seed=*.pt`` in the folder).
        """
        folder = Path(record)
        if not folder.is_dir():
            raise FileNotFoundError(f"backdoor-toolbox poisoned set {str(folder)!r} not found; pass "
                                    f"the poisoned_train_set/<dataset>/<folder> directory")
        params = parse_folder_name(folder.name)
        ptype, dataset = params["poison_type"], folder.parent.name
        checkout = folder.parents[2] if folder.parent.parent.name == "poisoned_train_set" else None
        labels = _long_vector(safe_load.load(folder / "labels", trust=trust_pickles), folder / "labels")
        n = len(labels)
        images = _images(folder, n, trust_pickles)
        poison_idx = _indices(folder / "poison_indices", n, trust_pickles, required=True)
        cover_idx = _indices(folder / "cover_indices", n, trust_pickles, required=False)
        k = NUM_CLASSES.get(dataset, int(labels.max()) + 1)
        target = TARGET.get(dataset, 0)
        notes = []

        bundle = _clean(clean, dataset, data_root, checkout, download)
        if bundle is not None and (len(bundle.y_train) != n or bundle.num_classes != k):
            raise RecordError(f"{folder}: {n} samples and {k} classes, but the clean dataset "
                              f"{bundle.name!r} has {len(bundle.y_train)} and {bundle.num_classes}")
        true = labels.clone()
        if bundle is not None:
            true = bundle.y_train.clone()
        elif ptype == "TaCT":
            true[poison_idx] = SOURCE_CLASS
        elif not _label_kept(ptype):
            notes.append("true labels of poisoned samples unknown (no clean dataset); "
                         "their given labels stand in")
        poison = torch.zeros(n, dtype=torch.bool)
        poison[poison_idx] = True
        cover = torch.zeros(n, dtype=torch.bool)
        cover[cover_idx] = True
        cover &= ~poison
        ours = our_attack(ptype, self.name)
        mean, std = NORMALIZATION.get(dataset, ((0.5,) * images.shape[1], (0.5,) * images.shape[1]))
        truth = GroundTruth(true, poison, cover, target, ours or ptype)
        train = PoisonedDataset(images, labels, k, mean, std, truth, name=f"backdoor-toolbox:{folder.name}")

        x_test, y_test = _test_split(checkout, dataset, train, trust_pickles)
        if x_test is None and bundle is not None:
            x_test, y_test = bundle.x_test, bundle.y_test
        clean_set = _clean_split(checkout, dataset, train, trust_pickles, mean, std, k)
        triggered = None
        if x_test is not None:
            tdir = Path(triggers_dir) if triggers_dir is not None else (
                checkout / "triggers" if checkout is not None else None)
            alpha = test_alpha if test_alpha is not None else params.get("alpha")
            triggered, why = _triggered(ptype, dataset, params, folder, tdir, alpha, target,
                                        x_test, y_test, k, trust_pickles)
            if triggered is not None:
                triggered.attack = ours or ptype
            else:
                notes.append(f"no backdoor test set: {why}")
        else:
            notes.append("no clean test set (no clean_set/<dataset>/test_split and no clean dataset)")

        model, model_name, model_file, note = _model(folder, params, dataset, k, train, model_path,
                                                     trust_pickles)
        notes.append(note)
        seed = re.search(r"seed=(\d+)", model_file or "")
        meta = {"toolbox": self.name, "record": str(folder), "toolbox_attack": ptype,
                "attack": ours, "target": target, "dataset": dataset, "params": params,
                "model_file": model_file, "toolbox_seed": int(seed[1]) if seed else None,
                "model_note": note, "notes": notes, "clean_pool": False}
        return ToolboxRecord(train, x_test, y_test, triggered, model, model_name, k,
                             clean=clean_set, meta=meta)

    def default_output(self, record: ToolboxRecord, defense: str) -> Path:
        return Path(record.meta["record"])

    def extras_folder(self, record: ToolboxRecord, defense: str, out=None) -> Path:
        """``<folder>/advrbd_plugin/<defense>/``: keeps the toolbox's folder uncluttered."""
        return (Path(out) if out is not None else self.default_output(record, defense)) \
            / "advrbd_plugin" / defense

    def write(self, record: ToolboxRecord, result, metrics: Mapping[str, Any], *, defense: str,
              out=None, seed: int = 0) -> dict:
        """defended_<defense>_<model file> and cleansed_set_indices_other_<defense>_seed=<s>."""
        folder = Path(out) if out is not None else self.default_output(record, defense)
        if record.meta.get("toolbox_seed") is not None:
            seed = record.meta["toolbox_seed"]
        model_file = record.meta.get("model_file") or f"full_base_aug_seed={seed}.pt"
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        if metrics.get("model") == "resnet18" and record.train.input_size[0] <= 32:
            state = to_toolbox_keys(state)
        written = {"model": folder / f"defended_{defense}_{model_file}"}
        atomic_torch_save(state, written["model"])
        if result.poison_mask is not None:
            keep = torch.nonzero(~result.poison_mask.bool().cpu()).flatten().tolist()
            written["cleansed_indices"] = folder / f"cleansed_set_indices_other_{defense}_seed={seed}"
            atomic_torch_save(keep, written["cleansed_indices"])
        return written


# -- reading helpers --------------------------------------------------------------------------
def _label_kept(ptype: str) -> bool:
    return ptype in ("SIG", "clean_label", "none")


def _long_vector(obj: Any, path: Path) -> torch.Tensor:
    t = torch.as_tensor(obj) if isinstance(obj, (list, np.ndarray, torch.Tensor)) else None
    if t is None or t.ndim != 1 or t.dtype.is_floating_point or len(t) == 0:
        raise RecordError(f"{path}: expected a 1-D integer label tensor, found "
                          f"{type(obj).__name__}{'' if t is None else tuple(t.shape)}")
    return t.long()


def _images(folder: Path, n: int, trust: bool) -> torch.Tensor:
    """``imgs`` (float N x C x H x W in [0, 1]), or the older ``data/<i>.png`` layout."""
    path = folder / "imgs"
    if path.exists() or not (folder / "data").is_dir():
        imgs = safe_load.load(path, trust=trust)
        if not isinstance(imgs, torch.Tensor) or imgs.ndim != 4 or len(imgs) != n:
            raise RecordError(f"{path}: expected a float tensor (N={n}, C, H, W) in [0, 1], found "
                              f"{type(imgs).__name__}{tuple(getattr(imgs, 'shape', ()))}")
        try:
            return as_tensor_images(imgs if imgs.dtype.is_floating_point else imgs.float(), str(path))
        except ValueError as exc:
            raise RecordError(str(exc)) from None
    first = read_png_any(folder / "data" / "0.png")
    arrays = [first] + [read_png(folder / "data" / f"{i}.png", first.shape) for i in range(1, n)]
    return torch.from_numpy(np.stack(arrays))


def read_png_any(path: Path) -> np.ndarray:
    """An RGB PNG of any size as uint8 (H, W, 3)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            size = img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except Exception as exc:
        raise RecordError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return read_png(path, (size[1], size[0], 3))


def _indices(path: Path, n: int, trust: bool, required: bool) -> torch.Tensor:
    if not path.exists() and not required:
        return torch.zeros(0, dtype=torch.long)
    obj = safe_load.load(path, trust=trust)
    try:
        idx = torch.as_tensor(np.asarray(obj, dtype=np.int64)).flatten()
    except (TypeError, ValueError):
        raise RecordError(f"{path}: expected a list of sample indices, found {type(obj).__name__}") from None
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise RecordError(f"{path}: indices must lie in [0, {n}), found [{int(idx.min())}, {int(idx.max())}]")
    return idx


def _clean(clean: Any, dataset: str, data_root, checkout: Optional[Path], download: bool):
    """The clean dataset when given or present on disk, else None."""
    from ..data import DatasetNotFoundError
    from ..registry import DATASETS

    if clean is not None:
        return clean_bundle(clean, None, None)
    root = data_root if data_root is not None else (
        checkout / "data" if checkout is not None and (checkout / "data").is_dir() else None)
    if root is None or dataset not in DATASETS:
        return None
    try:
        return clean_bundle(None, dataset, root, download)
    except DatasetNotFoundError:
        return None


def _png_split(folder: Path, label_file: str, train: PoisonedDataset,
               trust: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """A clean_set split: data/<i>.png plus a label tensor (uint8 NHWC, int64)."""
    if not (folder / label_file).exists():
        return None, None
    y = _long_vector(safe_load.load(folder / label_file, trust=trust), folder / label_file)
    h, w = train.input_size
    shape = (h, w, train.channels)
    x = np.stack([read_png(folder / "data" / f"{i}.png", shape) for i in range(len(y))])
    return torch.from_numpy(x), y


def _test_split(checkout, dataset, train, trust):
    if checkout is None:
        return None, None
    return _png_split(checkout / "clean_set" / dataset / "test_split", "labels", train, trust)


def _clean_split(checkout, dataset, train, trust, mean, std, k) -> Optional[PoisonedDataset]:
    if checkout is None:
        return None
    x, y = _png_split(checkout / "clean_set" / dataset / "clean_split", "clean_labels", train, trust)
    return None if x is None else PoisonedDataset(x, y, k, mean, std, name="backdoor-toolbox:clean_split")


class _StampedTriggers(Attack):
    """Test-time trigger of the toolbox's patch attacks: for each (pattern, mask, alpha),
    x' = x + alpha * mask * (pattern - x). TaCT triggers only its source class."""

    def __init__(self, layers: list, target: int, source: Optional[int] = None):
        super().__init__(target=target)
        self.layers, self.source = layers, source

    def test_candidates(self, labels: torch.Tensor) -> torch.Tensor:
        return labels == self.source if self.source is not None else labels != self.config.target

    def test_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for pattern, mask, alpha in self.layers:
            x = stamp(x, pattern.to(x), mask.to(x), alpha)
        return x


class _SavedGridWaNet(WaNet):
    """WaNet with the toolbox's saved warp field (their s = 0.5, grid_rescale = 1)."""

    def __init__(self, grid: torch.Tensor, target: int):
        super().__init__(target=target)
        self.grid = grid

    def warp_grid(self, h: int, w: int, device=None) -> torch.Tensor:
        return self.grid.to(device)


def _trigger_layer(tdir: Path, name: str, shape: tuple[int, int, int], alpha: float):
    """(pattern (C, H, W), mask (1, H, W), alpha) from their trigger file and mask rule."""
    c, h, w = shape
    path = tdir / name
    if not path.is_file():
        raise FileNotFoundError(f"trigger file {path} not found")
    pattern = load_image(str(path), c, h, w)
    mask_path = tdir / f"mask_{name}"
    if mask_path.is_file():
        mask = load_image(str(mask_path), 3, h, w)[:1]
    else:
        mask = (load_image(str(path), 3, h, w) > 0).any(0, keepdim=True).float()
    return pattern, mask, float(alpha)


def _triggered(ptype, dataset, params, folder, tdir, alpha, target, x_test, y_test, k, trust):
    """(TriggeredTestSet or None, why not)."""
    shape = (x_test.shape[3], x_test.shape[1], x_test.shape[2])
    try:
        if ptype == "SIG":
            attack = ATTACKS.build("sig", delta=30.0, f=6.0, target=target)
        elif ptype == "WaNet":
            ident = safe_load.load(folder / "identity_grid", trust=trust)
            noise = safe_load.load(folder / "noise_grid", trust=trust)
            grid = torch.clamp(ident.float() + 0.5 * noise.float() / shape[1], -1, 1)
            attack = _SavedGridWaNet(grid, target)
        elif tdir is None:
            return None, "no triggers/ directory (pass triggers_dir=)"
        elif ptype in BLEND_TYPES:
            name = params.get("trigger") or DEFAULT_TRIGGER[ptype]
            _trigger_layer(tdir, name, shape, 1.0)  # checks the file exists
            attack = ATTACKS.build("blend", trigger=str(tdir / name), alpha=float(alpha or 0.2),
                                   target=target)
        elif ptype in PATCH_TYPES:
            name = params.get("trigger") or DEFAULT_TRIGGER[ptype]
            a = float(alpha) if ptype == "basic" and alpha is not None else 1.0
            source = SOURCE_CLASS if ptype == "TaCT" else None
            attack = _StampedTriggers([_trigger_layer(tdir, name, shape, a)], target, source)
        elif ptype == "adaptive_patch" and dataset in ADAPTIVE_PATCH_TEST:
            names, alphas = ADAPTIVE_PATCH_TEST[dataset]
            attack = _StampedTriggers([_trigger_layer(tdir, n, shape, a) for n, a in zip(names, alphas)],
                                      target)
        else:
            return None, f"poison type {ptype!r} on {dataset!r} has no test trigger we can rebuild"
    except FileNotFoundError as exc:
        return None, f"{exc} (pass triggers_dir= pointing at the toolbox's triggers/)"
    return attack.triggered_test_set(x_test, y_test, num_classes=k), ""


def _model(folder, params, dataset, k, train, model_path, trust):
    """(model or None, our model name or None, model file name or None, note); weights
    that do not fit leave the model None."""
    from ..models import build_model

    arch = params.get("arch") or DEFAULT_ARCH.get(dataset)
    ours = ARCHS.get(arch or "")
    if model_path is not None:
        path = Path(model_path)
    else:
        found = sorted(folder.glob("full_base_aug_seed=*.pt")) or sorted(folder.glob("full_base_no_aug_seed=*.pt"))
        path = found[0] if found else None
    if path is None:
        return None, ours, None, "no trained model in the folder"
    if ours is None or train.input_size[0] > 32:
        return None, ours, path.name, f"architecture {arch!r} at {train.input_size} does not map onto our models"
    state = safe_load.load(path, trust=trust)
    model = build_model(ours, k, input_size=train.input_size[0], in_channels=train.channels)
    why = load_weights(model, from_toolbox_keys(state) if isinstance(state, Mapping) else state, str(path))
    if why is not None:
        return None, ours, path.name, f"{why}; weights not loaded"
    return model.eval(), ours, path.name, f"weights of {path.name} loaded"

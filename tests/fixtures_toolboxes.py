"""Fixture builders: each toolbox's on-disk format, written by our own code.

Matched against the toolboxes' public code (read, not copied):

* BackdoorBench ``record/<name>/``: ``utils/save_load_attack.py::save_attack_result`` (the
  dict keys), ``utils/bd_dataset_v2.py`` (``retrieve_state`` of prepro_cls_DatasetBD_v2
  and poisonedCLSDataContainer; PNGs at ``<save_folder>/<original_label>/<index>.png``;
  ``other_info = [bd_label, original_label]``), ``attack/prototype.py`` (``info.pickle``
  = torch.save(args.__dict__), save folder ``./record/<name>``), ``attack/badnet.py``
  (``train_poison_index_list.pickle``; bd_test subset to non-target indices),
  ``utils/backdoor_generate_poison_index.py`` (float64 0/1 indicator; all2one train
  poisons drawn from every class, clean-label ones from the target class),
  ``attack/wanet.py`` (noise samples keep their label; int keys). BackdoorBench ran on
  numpy 1.x, so its pickles name ``numpy.core.multiarray``; ``numpy1_names`` rewrites ours.
* backdoor-toolbox ``poisoned_train_set/<ds>/<folder>/``: ``create_poisoned_set.py``
  (``imgs`` float NCHW, ``labels`` LongTensor, ``poison_indices`` / ``cover_indices``
  sorted lists, WaNet's ``identity_grid`` / ``noise_grid``), ``utils/supervisor.py``
  (folder names, ``full_base_aug_seed=<seed>.pt``), ``utils/resnet.py`` (state-dict keys
  ``shortcut`` / ``linear``), ``create_clean_set.py`` (``clean_set/<ds>/{clean_split,
  test_split}/data/<i>.png`` plus ``clean_labels`` / ``labels``).
* BackdoorBox: ``core/attacks/BadNets.py`` (``PoisonedCIFAR10``: ``.data`` uint8 NHWC,
  ``.targets`` clean labels, ``.poisoned_set`` frozenset, trigger added in __getitem__).

Trigger images here are our own random patterns, never the toolboxes' files.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from advrbd_plugin.data import DatasetBundle
from advrbd_plugin.models import build_model

SIZE = 16


def toy_bundle(name: str = "bbtoy", n_train: int = 60, n_test: int = 30, classes: int = 4,
               size: int = SIZE, seed: int = 0) -> DatasetBundle:
    """Learnable toy images: class k brightens band k; labels i % classes."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % classes
        x = torch.randint(0, 60, (n, size, size, 3), generator=g)
        band = max(1, size // classes)
        for k in range(classes):
            x[y == k, (k * band) % size:(k * band) % size + band] += 150
        return x.clamp(0, 255).to(torch.uint8), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return DatasetBundle(name, x_train, y_train, x_test, y_test, classes,
                         mean=(0.3, 0.3, 0.3), std=(0.25, 0.25, 0.25))


def patch(img: np.ndarray) -> np.ndarray:
    """Our toy trigger: a white 3x3 square in the bottom-right corner (uint8 HWC)."""
    out = img.copy()
    out[-3:, -3:] = 255
    return out


def numpy1_names(path: Path) -> None:
    """Rewrite a torch.save zip so its pickle names numpy.core.* (as numpy 1.x writes)."""
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            z.writestr(info, data)


def _bd_state(save_folder: str, data_dict: dict, original_index: np.ndarray,
              indicator: np.ndarray) -> dict:
    """prepro_cls_DatasetBD_v2.retrieve_state(), key for key."""
    return {
        "bd_data_container": {"save_folder_path": save_folder, "data_dict": data_dict,
                              "save_file_format": ".png"},
        "getitem_all": True,
        "getitem_all_switch": False,
        "original_index_array": original_index,
        "poison_indicator": indicator,
        "save_folder_path": save_folder,
    }


def write_backdoorbench_record(bb_root: Path, bundle: DatasetBundle, *, name: str = "badnet_0_1",
                               attack: str = "badnet", target: int = 0, pratio: float = 0.2,
                               model_name: str = "preactresnet18", module_prefix: bool = True,
                               numpy1: bool = True, seed: int = 0) -> Path:
    """A BackdoorBench attack record under ``bb_root/record/<name>`` (its clean data is
    ``bundle``, registered as dataset ``bundle.name``)."""
    rng = np.random.RandomState(seed)
    folder = bb_root / "record" / name
    folder.mkdir(parents=True)
    save_path = f"./record/{name}"
    y = bundle.y_train.numpy()
    n = len(y)
    n_poison = round(pratio * n)
    if attack in ("sig", "lc"):  # clean-label: the target class only
        chosen = rng.choice(np.where(y == target)[0], min(n_poison, int((y == target).sum())), replace=False)
        cross = np.array([], dtype=np.int64)
    elif attack == "wanet":  # attack samples, then 2x noise (cross) samples; int keys
        order = rng.permutation(n)
        chosen, cross = order[:n_poison], order[n_poison:3 * n_poison]
    else:
        chosen = rng.choice(np.arange(n), n_poison, replace=False)
        cross = np.array([], dtype=np.int64)
    indicator = np.zeros(n)
    indicator[chosen] = 1
    indicator[cross] = 1
    torch.save(indicator, folder / "train_poison_index_list.pickle")

    def add(split_folder, data_dict, key, img, bd_label, label):
        rel = f"{split_folder}/{label}"
        (bb_root / rel).mkdir(parents=True, exist_ok=True)
        file_path = f"{rel}/{key}.png"
        Image.fromarray(img).save(bb_root / file_path)
        data_dict[key] = {"path": file_path, "other_info": [bd_label, label]}

    train_dict: dict = {}
    train_folder = f"{save_path}/bd_train_dataset"
    x = bundle.x_train.numpy()
    for idx in np.arange(n):  # keys are numpy int64, as when iterating original_index_array
        key = int(idx) if attack == "wanet" else idx
        if indicator[idx] != 1:
            continue
        label = int(y[idx])
        bd_label = label if (attack in ("sig", "lc") or idx in cross) else target
        add(train_folder, train_dict, key, patch(x[idx]), bd_label, label)

    yt, xt = bundle.y_test.numpy(), bundle.x_test.numpy()
    test_indicator = np.zeros(len(yt))
    test_indicator[np.where(yt != target)[0]] = 1
    test_dict: dict = {}
    test_folder = f"{save_path}/bd_test_dataset"
    for idx in np.arange(len(yt)):
        if test_indicator[idx] == 1:
            add(test_folder, test_dict, idx, patch(xt[idx]), target, int(yt[idx]))

    model = build_model(model_name, bundle.num_classes, input_size=SIZE, in_channels=3) \
        if model_name in ("preactresnet18",) else None
    state = {} if model is None else model.state_dict()
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    result = {
        "model_name": model_name,
        "num_classes": bundle.num_classes,
        "model": state,
        "data_path": f"./data/{bundle.name}",
        "img_size": (SIZE, SIZE, 3),
        "clean_data": bundle.name,
        "bd_train": _bd_state(train_folder, train_dict, np.arange(n), indicator),
        "bd_test": _bd_state(test_folder, test_dict, np.where(test_indicator == 1)[0], test_indicator),
    }
    torch.save(result, folder / "attack_result.pt")
    info = {"attack": attack, "attack_target": target, "attack_label_trans": "all2one",
            "pratio": pratio, "dataset": bundle.name, "dataset_path": f"./data/{bundle.name}",
            "model": model_name, "num_classes": bundle.num_classes, "img_size": (SIZE, SIZE, 3),
            "save_path": save_path, "random_seed": 0, "yaml_path": "./config/attack/prototype/cifar10.yaml",
            "terminal_info": ["./attack/badnet.py", "--save_folder_name", name]}
    torch.save(info, folder / "info.pickle")
    if numpy1:
        for f in ("attack_result.pt", "train_poison_index_list.pickle"):
            numpy1_names(folder / f)
    return folder


def toolbox_folder_name(poison_type: str, rate: float, alpha: float = 0.2, cover: float = 0.0,
                        trigger: str = "none", poison_seed: int = 0) -> str:
    """get_poison_set_dir's folder name (record_poison_seed=True, record_model_arch=False)."""
    r = "%.3f" % rate
    if poison_type in ("blend", "basic", "clean_label"):
        core = "%s_%s_alpha=%.3f_trigger=%s" % (poison_type, r, alpha, trigger)
    elif poison_type == "adaptive_blend":
        core = "%s_%s_alpha=%.3f_cover=%.3f_trigger=%s" % (poison_type, r, alpha, cover, trigger)
    elif poison_type in ("adaptive_patch", "TaCT", "WaNet"):
        core = "%s_%s_cover=%.3f" % (poison_type, r, cover)
    else:
        core = "%s_%s" % (poison_type, r)
    return f"{core}_poison_seed={poison_seed}"


def write_trigger(triggers: Path, name: str, seed: int, mask: bool = False) -> np.ndarray:
    """Our random trigger image (RGB, SIZE x SIZE); ``mask`` also writes mask_<name>."""
    triggers.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[-5:, -5:] = rng.randint(1, 256, (5, 5, 3))
    Image.fromarray(img).save(triggers / name)
    if mask:
        m = np.zeros((SIZE, SIZE, 3), np.uint8)
        m[-4:, -4:] = 255
        Image.fromarray(m).save(triggers / f"mask_{name}")
    return img


def _resnet18_toolbox_state(classes: int) -> dict:
    """Our resnet18's weights under the key names of the toolbox's utils/resnet.py."""
    state = build_model("resnet18", classes, input_size=SIZE).state_dict()
    out = {}
    for k, v in state.items():
        k = k.replace(".downsample.", ".shortcut.")
        out["linear." + k[3:] if k.startswith("fc.") else k] = v
    return out


def write_toolbox_folder(checkout: Path, bundle: DatasetBundle, *, poison_type: str = "adaptive_blend",
                         rate: float = 0.1, cover: float = 0.05, alpha: float = 0.15,
                         trigger: str | None = None, seed: int = 2333,
                         with_model: bool = True, with_clean_set: bool = True,
                         dataset: str = "cifar10") -> Path:
    """A backdoor-toolbox poisoned set under ``checkout/poisoned_train_set/<dataset>/``."""
    rng = np.random.RandomState(0)
    target, source, cover_classes = 0, 1, (5, 7)
    trigger = trigger or {"badnet": "badnet_patch_32.png", "TaCT": "trojan_square_32.png"}.get(
        poison_type, "hellokitty_32.png")  # their trigger_default
    x = bundle.x_train.permute(0, 3, 1, 2).float() / 255  # ToTensor(): float NCHW in [0, 1]
    y = bundle.y_train.clone()
    n = len(y)
    uses_trigger = poison_type in ("badnet", "blend", "adaptive_blend", "TaCT")
    if uses_trigger:
        t = torch.from_numpy(write_trigger(checkout / "triggers", trigger, 1, mask=poison_type == "TaCT"))
        t = t.permute(2, 0, 1).float() / 255
        mask = (t > 0).any(0).float()
        if poison_type == "TaCT":  # their rule: the mask_<trigger> file wins
            mask = torch.zeros(SIZE, SIZE)
            mask[-4:, -4:] = 1.0
    if poison_type == "adaptive_patch":
        for i, name in enumerate(("phoenix_corner2_32.png", "badnet_patch4_32.png")):
            write_trigger(checkout / "triggers", name, 10 + i)
    n_poison, n_cover = int(n * rate), int(n * cover)
    if poison_type == "TaCT":
        poison = sorted(rng.permutation(np.where(y.numpy() == source)[0])[:n_poison].tolist())
        covers = sorted(rng.permutation(np.where(np.isin(y.numpy(), cover_classes))[0])[:n_cover].tolist())
    elif poison_type == "SIG":
        poison = sorted(rng.permutation(np.where(y.numpy() == target)[0])[:n_poison].tolist())
        covers = []
    else:
        order = rng.permutation(n).tolist()
        poison = sorted(order[:n_poison])
        covers = sorted(order[n_poison:n_poison + n_cover]) if poison_type in (
            "adaptive_blend", "adaptive_patch", "WaNet") else []
    name = toolbox_folder_name(poison_type, rate, alpha, cover, trigger)
    folder = checkout / "poisoned_train_set" / dataset / name
    folder.mkdir(parents=True)
    if poison_type == "WaNet":
        ins = torch.rand(1, 2, 4, 4) * 2 - 1
        ins = ins / ins.abs().mean()
        noise_grid = torch.nn.functional.interpolate(ins, size=SIZE, mode="bicubic",
                                                     align_corners=True).permute(0, 2, 3, 1)
        a = torch.linspace(-1, 1, SIZE)
        rows, cols = torch.meshgrid(a, a, indexing="ij")
        identity_grid = torch.stack((cols, rows), 2)[None]
        torch.save(identity_grid, folder / "identity_grid")
        torch.save(noise_grid, folder / "noise_grid")
        grid = torch.clamp(identity_grid + 0.5 * noise_grid / SIZE, -1, 1)
    for i in poison + covers:
        img = x[i]
        if poison_type == "SIG":
            j = torch.arange(SIZE).float()
            img = (img + 30 / 255 * torch.sin(2 * np.pi * j * 6 / SIZE)).clamp(0, 1)
        elif poison_type == "WaNet":
            img = torch.nn.functional.grid_sample(img[None], grid, align_corners=True)[0]
        elif poison_type in ("blend", "adaptive_blend"):
            img = img + alpha * (t - img)
        elif uses_trigger:
            img = img + mask * (t - img)
        else:
            img = img.clone()
            img[:, -2:, -2:] = 1.0
        x[i] = img
    y[poison] = target if poison_type != "SIG" else y[poison]
    torch.save(x, folder / "imgs")
    torch.save(y, folder / "labels")
    torch.save(poison, folder / "poison_indices")
    if poison_type in ("TaCT", "WaNet", "adaptive_blend", "adaptive_patch"):
        torch.save(covers, folder / "cover_indices")
    if with_model:
        torch.save(_resnet18_toolbox_state(10), folder / f"full_base_aug_seed={seed}.pt")
    if with_clean_set:
        for split, xs, ys, label_file in (("test_split", bundle.x_test, bundle.y_test, "labels"),
                                          ("clean_split", bundle.x_test[:10], bundle.y_test[:10],
                                           "clean_labels")):
            d = checkout / "clean_set" / dataset / split
            (d / "data").mkdir(parents=True)
            for i, img in enumerate(xs.numpy()):
                Image.fromarray(img).save(d / "data" / f"{i}.png")
            torch.save(torch.as_tensor(ys, dtype=torch.long), d / label_file)
    return folder


class FakePoisonedCIFAR10:
    """The attributes and __getitem__ of BackdoorBox's PoisonedCIFAR10 (transform = ToTensor)."""

    def __init__(self, data: np.ndarray, targets: list, y_target: int, poisoned_rate: float, seed: int = 0):
        self.data, self.targets = data, list(targets)
        rng = np.random.RandomState(seed)
        order = rng.permutation(len(data)).tolist()
        self.poisoned_set = frozenset(order[:int(len(data) * poisoned_rate)])
        self.y_target = y_target

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        img, target = Image.fromarray(self.data[index]), int(self.targets[index])
        if index in self.poisoned_set:
            img = Image.fromarray(patch(np.asarray(img)))
            target = self.y_target
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255, target

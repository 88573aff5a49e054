"""attack -> train -> defend -> evaluate -> run folder. The CLI and the API both call ``run``."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import yaml

from . import __version__
from .config import (atomic_output, atomic_write_text, check_writable, load_yaml, merge,
                     packaged_yaml, parse_set, remove_stale_temps)
from .engine import Engine, TrainConfig, distributed
from .metrics import DEFINITIONS, attack_metrics, detection_metrics
from .registry import ATTACKS, DEFENSES

__all__ = ["resolve_config", "run", "finished", "run_folder", "Experiment"]

_SECTIONS = ("attack", "defense")


# ---------------------------------------------------------------------------- config
def _section(value: Any) -> dict:
    """'badnet' -> {'name': 'badnet'}; mappings pass through."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"expected a name or a mapping, found {value!r}")


def _normalize(layer: Mapping[str, Any]) -> dict:
    layer = dict(layer or {})
    for key in _SECTIONS:
        if key in layer:
            layer[key] = _section(layer[key])
    return layer


def _final(layers: list[dict], key: str, sub: Optional[str] = None):
    for layer in reversed(layers):
        val = layer.get(key)
        if sub is not None:
            val = val.get(sub) if isinstance(val, Mapping) else None
        if val is not None:
            return val
    return None


def _component_defaults(kind: str, name: str) -> dict:
    """The attack's / defense's own defaults: its dataclass, then its packaged YAML."""
    reg = ATTACKS if kind == "attack" else DEFENSES
    cls = reg.get(name)
    base = dataclasses.asdict(cls.Config()) if dataclasses.is_dataclass(getattr(cls, "Config", None)) else {}
    base = merge(base, packaged_yaml(f"{kind}s/{name}.yaml"))
    return {"name": name, **base}


def resolve_config(config: Optional[str | os.PathLike | Mapping] = None,
                   sets: Optional[list[str]] = None, **flags) -> dict:
    """The run config from every layer (see configs/defaults.yaml for the precedence).

    config: a YAML path or a mapping (the ``--config`` layer). sets: ['k.sub=v', ...].
    flags: explicit values (``dataset='digits'``, ``preset='cpu'``...); None means unset.
    ``recipe=`` (train keys) layers a toolbox's own training recipe over the dataset's.
    """
    flags = {k: v for k, v in flags.items() if v is not None}
    recipe = flags.pop("recipe", None)
    preset_flag = flags.pop("preset", None)
    user = _normalize(load_yaml(config) if isinstance(config, (str, os.PathLike)) else (config or {}))
    preset_name = preset_flag or user.pop("preset", None) or "paper"
    preset = packaged_yaml(f"presets/{preset_name}.yaml")
    if not preset and preset_name != "paper":
        from importlib import resources
        names = sorted(p.name[:-5] for p in resources.files("advrbd_plugin").joinpath(
            "configs", "presets").iterdir() if p.name.endswith(".yaml"))
        raise ValueError(f"unknown preset {preset_name!r}; choices: {', '.join(names)}")
    user.pop("preset", None)
    layers = [_normalize(packaged_yaml("defaults.yaml")), {}, _normalize(preset), user,
              _normalize(parse_set(sets)), _normalize(flags)]
    dataset = str(_final(layers, "dataset"))
    layers[1] = _normalize(packaged_yaml(f"datasets/{dataset}.yaml")) if ":" not in dataset else {}
    if recipe:  # a toolbox's own training recipe sits on top of the dataset's
        layers[1] = {**layers[1], "train": {**layers[1].get("train", {}), **recipe}}
    base = dict(layers[0])
    for key in _SECTIONS:
        base[key] = _component_defaults(key, str(_final(layers, key, "name")))
    cfg = base
    for layer in layers[1:]:
        cfg = merge(cfg, layer)
    cfg["preset"] = preset_name
    TrainConfig(**cfg["train"])  # validate early
    return cfg


def config_hash(cfg: Mapping) -> str:
    """Stable short hash of everything that changes results (not out/quiet/device)."""
    keep = {k: v for k, v in cfg.items() if k not in ("out", "quiet", "device", "preset")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_label(spec: str) -> str:
    return Path(spec[4:]).stem if spec.startswith("npz:") else spec


def run_folder(cfg: Mapping) -> Path:
    """runs/<dataset>/<attack>/<defense>/<seed>/"""
    return (Path(cfg["out"]) / dataset_label(cfg["dataset"]) / cfg["attack"]["name"]
            / cfg["defense"]["name"] / str(cfg["seed"]))


# ---------------------------------------------------------------------------- experiment
class Experiment:
    """Data, attack, model and engine of one resolved config; shared by run() and compare."""

    def __init__(self, cfg: Mapping):
        from .data import load_dataset
        from .models import build_model

        self.cfg = cfg
        self.engine = self.new_engine()
        self.train_cfg = TrainConfig(**cfg["train"])
        self.bundle = load_dataset(_resolve_dataset(cfg["dataset"]), root=cfg["data_root"],
                                   download=cfg["download"])
        clean = self.bundle.train_set()
        attack_kw = {k: v for k, v in cfg["attack"].items() if k != "name"}
        self.attack = ATTACKS.build(cfg["attack"]["name"], **attack_kw)
        self.poisoned = self.attack.poison(clean, seed=cfg["data_seed"])
        self.triggered = self.attack.triggered_test_set(self.bundle.x_test, self.bundle.y_test)
        self.clean_reserve = _reserve(clean, cfg["clean_fraction"], cfg["data_seed"])
        self._build_model = build_model

    def new_engine(self) -> Engine:
        """An engine with its own random stream: a run's results do not depend on what
        ran before it in the same process (e.g. a cached or fresh backdoored model)."""
        c = self.cfg
        return Engine(device=c["device"], precision=c["precision"], channels_last=c["channels_last"],
                      compile=c["compile"], quiet=c["quiet"], seed=c["seed"])

    def fresh_model(self) -> torch.nn.Module:
        b = self.bundle
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg["seed"])
            return self._build_model(self.cfg["model"], b.num_classes,
                                     input_size=int(b.x_train.shape[1]),
                                     in_channels=int(b.x_train.shape[-1]))

    def evaluate(self, model: torch.nn.Module) -> dict:
        eng, b = self.engine, self.bundle
        test = eng.data(b.x_test, b.mean, b.std)
        pred = eng.predict(model, test, desc="evaluate: clean test set")
        out = {"acc": float((pred == b.y_test.cpu()).float().mean()) if len(pred) else None,
               "asr": None, "ra": None, **prediction_spread(pred, b.num_classes)}
        if self.triggered is not None:
            pred = eng.predict(model, eng.data(self.triggered.images, b.mean, b.std),
                               desc="evaluate: triggered test set")
            out.update(attack_metrics(pred, self.triggered.target_labels, self.triggered.true_labels))
        return out

    def monitor(self):
        """A callable model -> {acc, asr} on a fixed random sample of the test sets (for
        histories; a random sample, since test sets are often sorted by class)."""
        size = int(self.cfg["monitor_size"])
        if size <= 0:
            return None
        eng, b = self.engine, self.bundle
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(b.y_test), generator=g)[:size]
        test = eng.data(b.x_test[pick], b.mean, b.std)
        y = b.y_test[pick]
        trig = None
        if self.triggered is not None:
            tp = torch.randperm(len(self.triggered.target_labels), generator=g)[:size]
            trig = (eng.data(self.triggered.images[tp], b.mean, b.std),
                    self.triggered.target_labels[tp], self.triggered.true_labels[tp])

        def monitor(model):
            out = {"acc": eng.accuracy(model, test, y)}
            if trig is not None:
                out["asr"] = attack_metrics(eng.predict(model, trig[0]), trig[1], trig[2])["asr"]
            return out

        return monitor


def prediction_spread(pred: torch.Tensor, num_classes: int) -> dict:
    """How many classes a model predicts on the clean test set, and a warning when it
    predicts one class for (nearly) everything: a collapsed model, whose ASR is meaningless."""
    counts = torch.bincount(pred.cpu(), minlength=num_classes)
    top = int(counts.argmax())
    share = float(counts[top]) / max(1, len(pred))
    out = {"predicted_classes": int((counts > 0).sum()), "warnings": []}
    if len(pred) and num_classes > 1 and share >= 0.99:
        out["warnings"].append(f"the model predicts class {top} for {share:.1%} of the clean test "
                               f"inputs: it has collapsed (ACC and ASR say nothing about a backdoor)")
    return out


def _resolve_dataset(spec: str) -> str:
    """npz:NAME also resolves against $ADVRBD_DATA_DIR and ../shared/data."""
    if spec.startswith("npz:") and not Path(spec[4:]).exists():
        from .data import shared_data_path
        found = shared_data_path(Path(spec[4:]).name)
        if found is not None:
            return f"npz:{found}"
    return spec


def _reserve(clean, fraction: float, seed: int):
    """A stratified random ``fraction`` of the clean train split (before poisoning)."""
    if not 0 < fraction < 1:
        raise ValueError(f"clean_fraction: expected a fraction in (0, 1), found {fraction}")
    g = torch.Generator().manual_seed(seed + 7919)
    picks = []
    for c in range(clean.num_classes):
        idx = torch.nonzero(clean.labels == c).flatten()
        k = max(1, int(round(fraction * len(idx)))) if len(idx) else 0
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return clean.subset(torch.cat(picks).sort().values)


# ---------------------------------------------------------------------------- run
def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _save_model(model: torch.nn.Module, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)


def backdoored_model(exp: Experiment) -> tuple[torch.nn.Module, float]:
    """The model trained plainly on the poisoned set, cached in the 'none' run folder.

    Returns (model, training seconds). Post-training defenses share it.
    """
    cfg = merge(exp.cfg, {"defense": {"name": "none"}}, strict=False)
    cfg["defense"] = _component_defaults("defense", "none")
    folder = run_folder(cfg)
    weights, meta = folder / "model.pt", folder / "metrics.json"
    model = exp.fresh_model()
    if weights.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("config_hash") == config_hash(cfg):
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return model.eval(), float(info["seconds"])
    metrics = run(cfg, _experiment=exp)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval(), float(metrics["seconds"])


def _resolved(config, sets, flags) -> dict:
    """An already-resolved config as is, else resolve_config(config, sets, **flags)."""
    if isinstance(config, Mapping) and "train" in config and not sets and not flags:
        return dict(config)
    return resolve_config(config, sets, **flags)


def finished(config: Optional[str | os.PathLike | Mapping] = None, *,
             sets: Optional[list[str]] = None, **flags) -> Optional[dict]:
    """The metrics of the finished cell with exactly this config (same arguments as ``run``),
    or None when it has not finished; nothing is trained."""
    cfg = _resolved(config, sets, flags)
    meta = run_folder(cfg) / "metrics.json"
    if not meta.is_file():
        return None
    done = json.loads(meta.read_text())
    return done if done.get("config_hash") == config_hash(cfg) else None


def run(config: Optional[str | os.PathLike | Mapping] = None, *, sets: Optional[list[str]] = None,
        resume: bool = True, _experiment: Optional[Experiment] = None, **flags) -> dict:
    """Run one (dataset, attack, defense, seed) cell and write its run folder.

    ``config`` may be an already-resolved config (as returned by ``resolve_config``), a
    YAML path or a partial mapping; ``flags`` are explicit values (dataset=..., attack=...,
    defense=..., preset=..., seed=..., model=..., device=..., out=..., quiet=...).
    Returns the metrics dict (also written to metrics.json). With ``resume``, a finished
    cell with the same config is not recomputed and an interrupted defense continues from
    its last finished stage.
    """
    cfg = _resolved(config, sets, flags)
    folder = run_folder(cfg)
    chash = config_hash(cfg)
    meta = folder / "metrics.json"
    done = finished(cfg) if resume else None
    if done is not None:
        return done
    exp = _experiment if _experiment is not None and _experiment.cfg["data_seed"] == cfg["data_seed"] \
        and _experiment.cfg["attack"] == cfg["attack"] and _experiment.cfg["dataset"] == cfg["dataset"] \
        else Experiment(cfg)
    main = distributed.is_main()  # under torchrun only rank 0 writes the run folder
    if main:
        check_writable(folder)
        remove_stale_temps(folder)  # left by a run killed mid-write
        atomic_write_text(folder / "config.yaml", yaml.safe_dump(dict(cfg), sort_keys=False))
    defense_kw = {k: v for k, v in cfg["defense"].items() if k != "name"}
    ckpt = folder / "checkpoints" / chash
    defense = DEFENSES.get(cfg["defense"]["name"])(defense_kw, engine=exp.new_engine(),
                                                   train=exp.train_cfg, checkpoint_dir=ckpt)
    defense.engine.announce()
    baseline_seconds = None
    if defense.needs_trained_model:
        model, baseline_seconds = backdoored_model(exp)
    else:
        model = exp.fresh_model()
    clean = exp.clean_reserve if defense.requires_clean_data else None
    if main:  # fail before training, not after it, when the results cannot be written
        weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        check_writable(folder, need_bytes=8 * weights + 16 * 2**20)
    t0 = time.perf_counter()
    result = defense.apply(exp.poisoned, model, clean_set=clean, monitor=exp.monitor())
    seconds = time.perf_counter() - t0
    metrics = {"dataset": cfg["dataset"], "attack": cfg["attack"]["name"],
               "defense": cfg["defense"]["name"], "model": cfg["model"], "seed": cfg["seed"]}
    metrics.update(exp.evaluate(result.model))
    for warning in metrics["warnings"] if main else []:
        print(f"advrbd: warning: {warning}", file=sys.stderr)
    truth = exp.poisoned.truth
    metrics["detection"] = detection_metrics(truth.poison_mask, truth.cover_mask,
                                             result.poison_mask, result.scores)
    metrics.update({
        "seconds": round(max(seconds, result.seconds), 3),
        "baseline_train_seconds": baseline_seconds,
        "clean_data": len(clean) if clean is not None else 0,
        "poisoned": int(truth.poison_mask.sum()), "cover": int(truth.cover_mask.sum()),
        "train_size": len(exp.poisoned),
        "result": result.to_dict(),
        "config_hash": chash,
        "run_folder": str(folder),
        "definitions": DEFINITIONS,
        "versions": {"advrbd_plugin": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "engine": exp.engine.describe(),
        "device": str(exp.engine.device), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    })
    if main:
        _save_model(result.model, folder / "model.pt")
        _write_report(folder / "poison_report.csv", result)
        from .report import plot_run
        plot_run(folder, result, truth)
        _write_json(meta, metrics)
    distributed.barrier()
    return metrics


def _write_report(path: Path, result) -> None:
    """poison_report.csv: index, score, flagged, relabel, then the result's extra arrays."""
    cols = {"score": result.scores, "flagged": result.poison_mask, "relabel": result.relabels,
            **result.arrays}
    cols = {k: v.cpu() for k, v in cols.items() if v is not None}
    if not cols:
        return
    n = len(next(iter(cols.values())))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", *cols])
    for i in range(n):
        w.writerow([i, *(f"{float(v[i]):.6g}" if v.is_floating_point() else int(v[i])
                         for v in cols.values())])
    atomic_write_text(path, buf.getvalue())

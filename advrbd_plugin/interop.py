"""Run any registered defense on a toolbox's attack record; write the outputs its way.

>>> from advrbd_plugin.interop import run_record
>>> m = run_record("backdoorbench", "record/badnet_0_1", defense="advrbd")
>>> m["acc"], m["asr"], m["ra"], m["outputs"]["defense_result"]

Reuses the runner's pieces: ``resolve_config`` (packaged defaults < dataset < preset <
config < sets < flags), the ``Experiment`` evaluation (ACC/ASR/RA) and monitor,
``DEFENSES`` with stage checkpoints, and ``metrics.detection_metrics``.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Optional

import torch
import yaml

from . import __version__
from .adapters.base import Adapter, ToolboxRecord
from .config import atomic_write_text
from .engine import Engine, TrainConfig
from .metrics import DEFINITIONS, detection_metrics
from .registry import ADAPTERS, DEFENSES
from .runner import Experiment, _reserve, _write_json, _write_report, config_hash, resolve_config

__all__ = ["run_record", "defend_record", "RecordExperiment", "export_config",
           "EXPORT_FORMATS", "our_dataset"]

#: Toolbox dataset names -> ours (for the dataset recipe in configs/datasets/).
_DATASETS = {"tiny": "tiny-imagenet"}


def our_dataset(name: Optional[str]) -> str:
    """Our dataset name for a toolbox's (the recipe's key); 'record' when unknown."""
    return _DATASETS.get(name, name) if name else "record"


class RecordExperiment(Experiment):
    """An Experiment over an already-loaded record: no dataset loading, no attack.

    The record's clean test set (``x_test``/``y_test``, possibly None) and triggered test
    set play the roles of the bundle's test split and the attack's triggered set.
    """

    def __init__(self, cfg: Mapping, record: ToolboxRecord):
        self.cfg = cfg
        self.engine = Engine(device=cfg["device"], precision=cfg["precision"],
                             channels_last=cfg["channels_last"], compile=cfg["compile"],
                             quiet=cfg["quiet"], seed=cfg["seed"])
        self.train_cfg = TrainConfig(**cfg["train"])
        t = record.train
        self.bundle = SimpleNamespace(x_test=record.x_test, y_test=record.y_test, mean=t.mean,
                                      std=t.std, num_classes=record.num_classes)
        self.attack = None
        self.poisoned = t
        self.triggered = record.triggered
        self.clean_reserve = None

    def fresh_model(self) -> torch.nn.Module:
        from .models import build_model

        t = self.poisoned
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg["seed"])
            return build_model(self.cfg["model"], t.num_classes, input_size=t.input_size[0],
                               in_channels=t.channels)

    def evaluate(self, model: torch.nn.Module) -> dict:
        if self.bundle.x_test is not None:
            return super().evaluate(model)
        out = {"acc": None, "asr": None, "ra": None}
        if self.triggered is not None:
            from .metrics import attack_metrics

            eng, b = self.engine, self.bundle
            pred = eng.predict(model, eng.data(self.triggered.images, b.mean, b.std))
            out.update(attack_metrics(pred, self.triggered.target_labels, self.triggered.true_labels))
        return out

    def monitor(self):
        return super().monitor() if self.bundle.x_test is not None else None

    def asr_all(self, model: torch.nn.Module) -> Optional[float]:
        """BackdoorBox's ASR: every triggered input counts, target class included."""
        if self.triggered is None:
            return None
        eng, b = self.engine, self.bundle
        pred = eng.predict(model, eng.data(self.triggered.images, b.mean, b.std))
        return float((pred == self.triggered.target_labels.cpu()).float().mean())


def run_record(fmt: str, record: Any, defense: str = "advrbd", preset: Optional[str] = None,
               sets: Optional[list[str]] = None, device: str = "auto", trust_pickles: bool = False,
               *, load_options: Optional[Mapping[str, Any]] = None, write: bool = True,
               **flags) -> dict:
    """Load ``record`` with the ``fmt`` adapter, run ``defense``, evaluate, write outputs.

    fmt: a registered adapter (backdoorbench, backdoor-toolbox, backdoorbox, arrays).
    record: what that adapter loads (a record folder, a poisoned-set folder, BackdoorBox
        datasets, arrays or an .npz).
    preset / sets / flags: run-config layers as in ``runner.run`` (``config=`` a YAML path
        or mapping, ``seed=``, ``model=``, ``precision=``, ``quiet=``, ...); ``data_root``
        and ``download`` also reach the adapter. ``out=`` overrides where outputs go
        (default: the toolbox's own place, e.g. record/<name>/defense/<defense>/).
    trust_pickles: let files with non-allow-listed pickled types load (trusted files only).
    load_options: adapter options (clean=, triggers_dir=, y=, ...).
    Returns the metrics dict (acc, asr, ra in [0, 1], detection, timings, ...) with
    ``outputs``: what the adapter wrote (paths) or returns (model, ART report, ...).
    """
    adapter: Adapter = ADAPTERS.get(fmt)()
    options = dict(load_options or {})
    for key in ("data_root", "download"):
        if flags.get(key) is not None and _accepts(adapter, key):
            options.setdefault(key, flags[key])
    rec = adapter.load(record, trust_pickles=trust_pickles, **options)
    return defend_record(adapter, rec, defense=defense, preset=preset, sets=sets, device=device,
                         write=write, **flags)


def _accepts(adapter: Adapter, key: str) -> bool:
    import inspect

    return key in inspect.signature(adapter.load).parameters


def defend_record(adapter: Adapter, rec: ToolboxRecord, *, defense: str = "advrbd",
                  preset: Optional[str] = None, sets: Optional[list[str]] = None,
                  device: str = "auto", write: bool = True, **flags) -> dict:
    """The defend / evaluate / write half of :func:`run_record` for a loaded record."""
    flags = {k: v for k, v in flags.items() if v is not None}
    config = flags.pop("config", None)
    out = flags.pop("out", None)
    flags.pop("data_root", None)
    flags.pop("download", None)
    flags.setdefault("model", rec.model_name)
    flags.setdefault("dataset", our_dataset(rec.meta.get("dataset")))
    cfg = resolve_config(config, sets, preset=preset, defense=defense, device=device,
                         recipe=adapter.train_recipe, **flags)
    name = cfg["defense"]["name"]
    exp = RecordExperiment(cfg, rec)
    folder = adapter.extras_folder(rec, name, out)
    chash = config_hash({**cfg, "record": rec.meta.get("record")})
    ckpt = folder / "checkpoint" / chash if folder is not None else None
    knobs = {k: v for k, v in cfg["defense"].items() if k != "name"}
    d = DEFENSES.get(name)(knobs, engine=exp.engine, train=exp.train_cfg, checkpoint_dir=ckpt)
    exp.engine.announce()
    if d.needs_trained_model:
        if rec.model is None:
            raise ValueError(f"defense {name!r} repairs a trained model, but the record has no usable "
                             f"one ({rec.meta.get('model_note')}); pick a defense that trains from "
                             f"scratch, e.g. advrbd")
        model = rec.model
    else:
        model = exp.fresh_model()
    clean = None
    if d.requires_clean_data:
        if rec.clean is None:
            raise ValueError(f"defense {name!r} needs clean data, and this {adapter.name} record "
                             f"provides none")
        clean = _reserve(rec.clean, cfg["clean_fraction"], cfg["data_seed"]) \
            if rec.meta.get("clean_pool") else rec.clean
    t0 = time.perf_counter()
    result = d.apply(rec.train, model, clean_set=clean, monitor=exp.monitor())
    seconds = time.perf_counter() - t0

    truth = rec.train.truth
    metrics: dict[str, Any] = {
        "format": adapter.name, "record": rec.meta.get("record"),
        "dataset": rec.meta.get("dataset"),
        "attack": rec.meta.get("attack") or rec.meta.get("toolbox_attack") or "unknown",
        "toolbox_attack": rec.meta.get("toolbox_attack"), "defense": name, "model": cfg["model"],
        "seed": cfg["seed"],
    }
    metrics.update(exp.evaluate(result.model))
    if rec.meta.get("asr_counts_target_class"):
        metrics["asr_backdoorbox"] = exp.asr_all(result.model)
    scores, warnings = result.scores, list(metrics.pop("warnings", []))
    if scores is not None and not bool(torch.isfinite(scores).all()):
        warnings.append(f"the defense returned {int((~torch.isfinite(scores)).sum())} non-finite "
                        f"suspicion scores; AUROC not computed")
        scores = None
    for warning in warnings:
        print(f"advrbd: warning: {warning}", file=sys.stderr)
    metrics["detection"] = None if truth is None else detection_metrics(
        truth.poison_mask, truth.cover_mask, result.poison_mask, scores)
    metrics.update({
        "seconds": round(max(seconds, result.seconds), 3),
        "clean_data": len(clean) if clean is not None else 0,
        "poisoned": None if truth is None else int(truth.poison_mask.sum()),
        "cover": None if truth is None else int(truth.cover_mask.sum()),
        "train_size": len(rec.train),
        "result": result.to_dict(),
        "record_notes": {k: rec.meta[k] for k in ("model_note", "notes") if rec.meta.get(k)},
        "warnings": warnings,
        "config_hash": chash,
        "definitions": DEFINITIONS,
        "versions": {"advrbd_plugin": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "engine": exp.engine.describe(),
        "device": str(exp.engine.device), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    })
    outputs = adapter.write(rec, result, metrics, defense=name, out=out, seed=cfg["seed"]) if write else {}
    if write and folder is not None:
        outputs["metrics"] = folder / "metrics.json"
        outputs["config"] = folder / "config.yaml"
        atomic_write_text(outputs["config"], yaml.safe_dump(dict(cfg), sort_keys=False))
        _write_report(folder / "poison_report.csv", result)
        if (folder / "poison_report.csv").is_file():
            outputs["poison_report"] = folder / "poison_report.csv"
        on_disk = {k: str(v) for k, v in outputs.items() if isinstance(v, Path)}
        _write_json(outputs["metrics"], {**metrics, "outputs": on_disk})
    metrics["outputs"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in outputs.items()}
    return metrics


# -- exported configs ---------------------------------------------------------------------------
#: Formats whose defense config ``export_config`` writes.
EXPORT_FORMATS = ("backdoorbench",)

#: BackdoorBench's common defense keys that map onto our run config.
BACKDOORBENCH_KEYS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                      "wd": "weight_decay", "sgd_momentum": "momentum"}


def export_config(fmt: str = "backdoorbench", defense: str = "advrbd", dataset: str = "cifar10",
                  preset: Optional[str] = None, sets: Optional[list[str]] = None) -> str:
    """The YAML a toolbox's runner reads for ``defense`` (BackdoorBench:
    ``config/defense/<defense>/<dataset>.yaml``), filled from our resolved config, with
    ``sets`` (['precision=fp32', 'train.epochs=50', 'defense.eps=0.05']) applied first."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export-config: format {fmt!r} has no config file to write; "
                         f"choices: {', '.join(EXPORT_FORMATS)}")
    cfg = resolve_config(None, sets, preset=preset, defense=defense, dataset=our_dataset(dataset),
                         recipe=ADAPTERS.get(fmt).train_recipe)
    knobs = {k: v for k, v in cfg["defense"].items() if k != "name"}
    common = {"device", "dataset", "dataset_path", "random_seed", "model", "precision", "defense",
              *BACKDOORBENCH_KEYS}
    clash = sorted(set(knobs) & common)
    if clash:
        raise ValueError(f"defense {defense!r} has knobs named like BackdoorBench's common keys "
                         f"({', '.join(clash)}); rename them")
    train = cfg["train"]
    head = [
        f"# {defense} for BackdoorBench, run by advrbd_plugin {__version__} "
        f"(written by `advrbd export-config --format backdoorbench`).",
        "# From the BackdoorBench root:",
        f"#   python -m advrbd_plugin.integrations.backdoorbench --result_file <record> "
        f"--yaml_path config/defense/{defense}/{dataset}.yaml --dataset {dataset}",
        f"# Outputs: record/<record>/defense/{defense}/ (defense_result.pt, {defense}_df.csv,",
        f"#   {defense}_df_summary.csv, detection_info.csv when samples are flagged, metrics.json).",
        "# CLI flags override these values, as in BackdoorBench.",
    ]
    body = {
        "device": cfg["device"],     # auto | cpu | cuda | cuda:N
        "dataset": dataset,
        "dataset_path": "./data",
        "random_seed": int(cfg["seed"]),
        "model": None,               # null: the record's architecture
        "precision": cfg["precision"],
        **{bb: train[ours] for bb, ours in BACKDOORBENCH_KEYS.items()},
        "defense": defense,
        **knobs,
    }
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False)

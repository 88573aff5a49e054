"""BackdoorBench-style entry point: a registered defense on a BackdoorBench record.

Run from the BackdoorBench root, exactly like its ``python ./defense/<name>.py``::

    python -m advrbd_plugin.integrations.backdoorbench --result_file badnet_0_1 \\
        --yaml_path config/defense/advrbd/cifar10.yaml --dataset cifar10

It reads ``record/<result_file>/`` and writes ``record/<result_file>/defense/<defense>/``
(``defense_result.pt``, ``<defense>_df.csv``, ``<defense>_df_summary.csv``,
``detection_info.csv`` when samples are flagged, ``metrics.json``, ``log/``).
``--defense NAME`` picks any registered defense (default: the yaml's ``defense``, else
advrbd); ``advrbd export-config --format backdoorbench`` writes the yaml. As in
BackdoorBench, CLI values override the yaml, and each defense knob is also a flag
(``--eps 0.05``). BackdoorBench's loader flags we have no use for (``--amp``,
``--num_workers``, ``--lr_scheduler`` ...) are accepted and ignored.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from ..config import atomic_write_text, load_yaml
from ..interop import BACKDOORBENCH_KEYS, defend_record
from ..data.base import DatasetNotFoundError
from ..engine.core import TrainingDiverged
from ..registry import ADAPTERS, DEFENSES, UnknownNameError

__all__ = ["build_parser", "main"]

#: Flags of BackdoorBench's defense scripts we accept but do not use.
IGNORED = ("pin_memory", "non_blocking", "prefetch", "amp", "checkpoint_load", "checkpoint_save",
           "log", "num_workers", "lr_scheduler", "steplr_stepsize", "steplr_gamma",
           "steplr_milestones", "client_optimizer", "frequency_save", "index", "ratio")
_SHORT = {"pin_memory": "-pm", "non_blocking": "-nb", "prefetch": "-pf"}


def _bool(text: str) -> bool:
    return str(text) in ("True", "true", "1")


def _knob_type(hint: Any):
    hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if hint is bool:
        return _bool
    if hint in (int, float, str):
        return hint
    return yaml.safe_load


def build_parser(defense: str) -> argparse.ArgumentParser:
    """BackdoorBench's common defense flags plus one flag per knob of ``defense``."""
    p = argparse.ArgumentParser(
        prog="python -m advrbd_plugin.integrations.backdoorbench",
        description=f"Run the {defense!r} defense on a BackdoorBench attack record "
                    f"(from the BackdoorBench root).")
    p.add_argument("--result_file", help="record folder name under record/ (or a path)")
    p.add_argument("--yaml_path", help="defense config (advrbd export-config --format backdoorbench)")
    p.add_argument("--defense", help="registered defense (default: the yaml's, else advrbd)")
    p.add_argument("--dataset", help="cifar10, cifar100, gtsrb, tiny (checked against the record)")
    p.add_argument("--dataset_path", help="folder of the clean datasets (default ./data)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--random_seed", type=int)
    p.add_argument("--model", help="architecture for defenses that train from scratch")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--wd", type=float)
    p.add_argument("--sgd_momentum", type=float)
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--trust_pickles", action="store_const", const=True,
                   help="load record files with non-allow-listed pickled types (trusted files only)")
    for name in IGNORED:
        flags = [f"--{name}"] + ([_SHORT[name]] if name in _SHORT else [])
        p.add_argument(*flags, dest=name, help=argparse.SUPPRESS)
    cls = DEFENSES.get(defense)
    if dataclasses.is_dataclass(getattr(cls, "Config", None)):
        hints = typing.get_type_hints(cls.Config)
        group = p.add_argument_group(f"{defense} knobs")
        for f in dataclasses.fields(cls.Config):
            group.add_argument(f"--{f.name}", type=_knob_type(hints.get(f.name)),
                               help=f"default {f.default!r}" if f.default is not dataclasses.MISSING else None)
    return p


def _knob_names(defense: str) -> set[str]:
    cls = DEFENSES.get(defense)
    config = getattr(cls, "Config", None)
    return {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()


def _check_keys(values: dict, defense: str, source: str) -> None:
    known = {"result_file", "yaml_path", "defense", "dataset", "dataset_path", "device",
             "random_seed", "model", "precision", "trust_pickles", *BACKDOORBENCH_KEYS, *IGNORED,
             *_knob_names(defense)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{source}: unknown key {key!r} for defense {defense!r}.{hint}")


def _drop_other_knobs(values: dict, defense: str, source: str) -> None:
    """A yaml written for another defense: drop that defense's knobs (with a note)."""
    other = values.get("defense")
    if not other or other == defense or other not in DEFENSES:
        return
    dropped = sorted((_knob_names(other) - _knob_names(defense)) & set(values))
    for key in dropped:
        values.pop(key)
    if dropped:
        print(f"note: {source} is for {other!r}; ignoring its knobs {', '.join(dropped)}",
              file=sys.stderr)


def run(values: dict) -> dict:
    """Run from merged yaml + CLI ``values``; returns the metrics (with ``outputs``)."""
    defense = values.get("defense") or "advrbd"
    if not values.get("result_file"):
        raise ValueError("--result_file is required (the record folder name under record/)")
    record = Path(values["result_file"])
    if not record.is_dir():
        record = Path("record") / values["result_file"]
    adapter = ADAPTERS.get("backdoorbench")()
    try:
        rec = adapter.load(record, trust_pickles=bool(values.get("trust_pickles")),
                           data_root=values.get("dataset_path"))
    except DatasetNotFoundError as exc:  # name this entry point's flag, not our CLI's
        raise DatasetNotFoundError(
            f"{exc.reason} Pass --dataset_path DIR (or dataset_path in the yaml): the folder that "
            f"holds the clean dataset the attack used, as for BackdoorBench's own scripts "
            f"(default: data/ of the checkout that holds record/).", exc.reason) from None
    if values.get("dataset") and values["dataset"] != rec.meta["dataset"]:
        raise ValueError(f"--dataset {values['dataset']!r}, but the record {record} was made on "
                         f"{rec.meta['dataset']!r}")
    device = str(values.get("device") or "auto").split(",")[0]  # "cuda:2,3" -> "cuda:2"
    knobs = {k: values[k] for k in _knob_names(defense) if values.get(k) is not None}
    train = {ours: values[bb] for bb, ours in BACKDOORBENCH_KEYS.items() if values.get(bb) is not None}
    config = {"defense": {"name": defense, **knobs}, "train": train}
    return defend_record(adapter, rec, defense=defense, device=device, config=config,
                         seed=values.get("random_seed"), model=values.get("model"),
                         precision=values.get("precision"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--defense")
        pre.add_argument("--yaml_path")
        known, _ = pre.parse_known_args(argv)
        file_values = load_yaml(known.yaml_path) if known.yaml_path else {}
        defense = known.defense or file_values.get("defense") or "advrbd"
        _drop_other_knobs(file_values, defense, str(known.yaml_path))
        args = build_parser(defense).parse_args(argv)
        _check_keys(file_values, defense, str(known.yaml_path))
        values = {**file_values, **{k: v for k, v in vars(args).items() if v is not None}}
        values["defense"] = defense
        started = time.strftime("%Y_%m_%d_%H_%M_%S")
        metrics = run(values)
    except (ValueError, FileNotFoundError, UnknownNameError, TypeError,
            TrainingDiverged) as exc:
        print(f"advrbd_plugin.integrations.backdoorbench: error: {exc}", file=sys.stderr)
        return 2
    folder = Path(metrics["outputs"]["defense_result"]).parent
    summary = {"test_acc": metrics["acc"], "test_asr": metrics["asr"], "test_ra": metrics["ra"]}
    atomic_write_text(folder / "log" / f"{started}.log", "\n".join([
        "argv: " + " ".join(argv), "config: " + json.dumps(values, default=str),
        "result: " + json.dumps(summary), "outputs: " + json.dumps(metrics["outputs"], default=str)]) + "\n")
    print(f"{defense}: " + ", ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in summary.items()))
    print(f"outputs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

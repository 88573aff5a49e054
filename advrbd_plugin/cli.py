"""Command-line front end: parses arguments and calls the runner (no logic of its own)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import yaml

from .config import OutputError
from .engine.core import TrainingDiverged
from .registry import ADAPTERS, ATTACKS, DATASETS, DEFENSES, MODELS, UnknownNameError

_REGISTRIES = {"defenses": DEFENSES, "attacks": ATTACKS, "models": MODELS,
               "datasets": DATASETS, "adapters": ADAPTERS}


def _run_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by run / show-config / compare; None = not given (lower layers win)."""
    p.add_argument("--dataset", help="registered dataset or npz:PATH (see `advrbd list datasets`)")
    p.add_argument("--data-root", dest="data_root", help="folder of torchvision/ImageFolder data")
    p.add_argument("--model", help="registered model (see `advrbd list models`)")
    p.add_argument("--preset", help="paper | cpu | smoke")
    p.add_argument("--seed", type=int)
    p.add_argument("--data-seed", dest="data_seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--out", help="root folder of run folders (default runs)")
    p.add_argument("--config", help="YAML file layered over the packaged defaults")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="override one key, e.g. --set train.epochs=3 --set defense.eps=0.05")
    p.add_argument("--quiet", action="store_const", const=True, help="no progress bars")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")


def _flags(a: argparse.Namespace, *names: str) -> dict:
    keys = ("dataset", "data_root", "model", "preset", "seed", "data_seed", "device", "precision",
            "out", "quiet", "compile") + names
    return {k: getattr(a, k, None) for k in keys}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="advrbd", description="AdvrBD backdoor defense and baselines")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("what", nargs="?", choices=sorted(_REGISTRIES), help="one registry (default: all)")

    p = sub.add_parser("show-config", help="print the resolved run config")
    _run_flags(p)
    p.add_argument("--attack")
    p.add_argument("--defense")

    p = sub.add_parser("run", help="attack -> train -> defend -> evaluate one cell")
    _run_flags(p)
    p.add_argument("--attack", help="registered attack (default none)")
    p.add_argument("--defense", help="registered defense (default none)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="recompute even if the run folder holds a finished run or checkpoints")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of a table")
    p.add_argument("--format", help="defend a toolbox attack record of this format (see `advrbd list adapters`)")
    p.add_argument("--record", help="with --format: the record folder or file to defend")

    p = sub.add_parser("show-attack", help="write a grid of clean vs poisoned samples")
    p.add_argument("name")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--out", default="attack_grid.png")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="attack knob, e.g. --set alpha=0.3")
    p.add_argument("--seed", type=int, default=0)

    from .commands import register_commands
    register_commands(sub, _run_flags, _flags)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, FileNotFoundError, UnknownNameError, TypeError,
            TrainingDiverged, OutputError) as exc:
        print(f"advrbd: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write failed mid-run (disk full, read-only): one line, no traceback
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"advrbd: error: {type(exc).__name__}{where}: {exc.strerror or exc}; nothing "
              f"half-written was kept; free space or pass --out DIR on another disk", file=sys.stderr)
        return 2


def _dispatch(a: argparse.Namespace) -> int:
    from . import runner

    if a.cmd == "list":
        for name, reg in _REGISTRIES.items():
            if a.what in (None, name):
                print(f"{name}: {', '.join(reg.names())}")
        return 0
    if a.cmd == "show-config":
        cfg = runner.resolve_config(a.config, a.sets, attack=a.attack, defense=a.defense,
                                    **_flags(a))
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    if a.cmd == "run":
        if getattr(a, "format", None) or getattr(a, "record", None):  # same as `advrbd run-record`
            from .commands import dispatch_command
            return dispatch_command(argparse.Namespace(**{**vars(a), "cmd": "run-record"}), _flags)
        metrics = runner.run(a.config, sets=a.sets, resume=a.resume, attack=a.attack,
                             defense=a.defense, **_flags(a))
        from .engine import distributed
        if not distributed.is_main():  # under torchrun rank 0 reports
            return 0
        if a.json:
            print(json.dumps(metrics, indent=2, default=str))
        else:
            print(summary_table([metrics]))
            print(f"run folder: {metrics['run_folder']}")
        return 0
    if a.cmd == "show-attack":
        from .attacks import save_attack_grid
        from .config import parse_set
        from .data import load_dataset

        bundle = load_dataset(runner._resolve_dataset(a.dataset), root=a.data_root)
        attack = ATTACKS.build(a.name, **parse_set(a.sets))
        save_attack_grid(attack, bundle.train_set(), a.out, seed=a.seed)
        print(f"wrote {a.out}")
        return 0
    from .commands import dispatch_command
    return dispatch_command(a, _flags)


def summary_table(rows: list[dict]) -> str:
    from .report import fmt_pct, markdown_table

    out = []
    for m in rows:
        d = m.get("detection") or {}
        out.append([m["attack"], m["defense"], fmt_pct(m["acc"]), fmt_pct(m["asr"]), fmt_pct(m["ra"]),
                    fmt_pct(d.get("tpr")), fmt_pct(d.get("fpr")), f"{m['seconds']:.1f}"])
    return markdown_table(["attack", "defense", "ACC %", "ASR %", "RA %", "TPR %", "FPR %", "seconds"], out)


if __name__ == "__main__":
    sys.exit(main())

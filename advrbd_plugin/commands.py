"""Sub-commands beyond run/list/show-config/show-attack: compare, scan, interop.

Each group adds its parsers in a ``_register_*`` function and handles its commands in a
``_dispatch_*`` function returning an exit code, or None when the command is not its own.
Like the rest of the CLI they only parse and call library functions.
"""
from __future__ import annotations

import argparse


def register_commands(sub, run_flags, flags) -> None:
    """sub: argparse subparsers; run_flags(parser) adds the shared run flags;
    flags(namespace) -> dict of those flags (None = not given)."""
    _register_compare(sub, run_flags)
    _register_scan(sub, run_flags)
    _register_interop(sub, run_flags)


def dispatch_command(a: argparse.Namespace, flags) -> int:
    for handler in (_dispatch_compare, _dispatch_scan, _dispatch_interop):
        code = handler(a, flags)
        if code is not None:
            return code
    raise ValueError(f"unknown command {a.cmd!r}")


# -- compare (owner: the baselines / compare work) ----------------------------------------
def _register_compare(sub, run_flags) -> None:
    p = sub.add_parser("compare", help="run attacks x defenses x seeds and tabulate them "
                                       "(the paper's Table II layout)",
                       description="Finished cells are skipped, so an interrupted grid resumes. "
                                   "The none defense always runs first (it trains the shared "
                                   "backdoored model and is the time_ratio denominator).")
    run_flags(p)
    p.add_argument("--attacks", nargs="+", required=True, metavar="ATTACK")
    p.add_argument("--defenses", nargs="+", required=True, metavar="DEFENSE")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="seeds to average over (default: --seed, else 0)")
    p.add_argument("--report-dir", dest="report_dir",
                   help="where compare.md/csv/json go (default <out>/<dataset>/compare)")
    p.add_argument("--finished-only", dest="finished_only", action="store_true",
                   help="train nothing: tabulate the cells already finished (e.g. computed by "
                        "several compare processes in parallel)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: cells one after another here; ray: each cell a Ray task "
                        "(pip install -e \".[ray]\")")
    p.add_argument("--address", help="with --backend ray: a running cluster (auto, ray://host:10001); "
                                     "default: start a local one")
    p.add_argument("--num-cpus", dest="num_cpus", type=float, default=1,
                   help="with --backend ray: CPUs per cell task (default 1)")
    p.add_argument("--num-gpus", dest="num_gpus", type=float,
                   help="with --backend ray: GPUs per cell task (default 1 on CUDA, else 0)")


def _dispatch_compare(a, flags):
    if a.cmd != "compare":
        return None
    from .compare import compare

    kw = flags(a)
    seed = kw.pop("seed")
    seeds = a.seeds or [0 if seed is None else seed]
    dataset = kw.pop("dataset")
    if dataset is None:
        raise ValueError("compare needs --dataset (a registered dataset or npz:PATH)")
    rows = compare(dataset, a.attacks, a.defenses, seeds, sets=a.sets, config=a.config,
                   report_dir=a.report_dir, finished_only=a.finished_only, backend=a.backend,
                   address=a.address, num_cpus=a.num_cpus, num_gpus=a.num_gpus, **kw)
    from .report import fmt_pct, markdown_table

    print(markdown_table(["attack", "defense", "ACC %", "ASR %", "RA %", "TPR %", "FPR %",
                          "time_ratio"],
                         [[r["attack"], r["defense"], fmt_pct(r["acc"]), fmt_pct(r["asr"]),
                           fmt_pct(r["ra"]), fmt_pct(r["tpr"]), fmt_pct(r["fpr"]),
                           "-" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}"]
                          for r in rows]), end="")
    return 0


# -- scan (owner: the AdvrBD work) ---------------------------------------------------------
def _register_scan(sub, run_flags) -> None:
    p = sub.add_parser("scan", help="defend your own data: cleaned model + ranked suspicious samples",
                       description="No attack, no ground truth: trains through the defense "
                                   "(AdvrBD by default) on DATA and writes model.pt, "
                                   "suspicious.csv (most suspicious first) and scan.json to --out.")
    p.add_argument("--data", required=True, help="an .npz (x_train, y_train[, x_test, y_test]; "
                                                "uint8 NHWC) or a folder of class sub-folders "
                                                "(optionally train/ and test/)")
    p.add_argument("--model", help="registered model (see `advrbd list models`)")
    p.add_argument("--defense", default="advrbd")
    p.add_argument("--preset", help="paper | cpu | smoke (training recipe)")
    p.add_argument("--image-size", dest="image_size", type=int, default=32,
                   help="folder data: images are resized to this side")
    p.add_argument("--out", default="scan", help="output folder (default ./scan)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="override a key, e.g. --set train.epochs=20 --set defense.rounds=3")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _dispatch_scan(a, flags):
    if a.cmd != "scan":
        return None
    from .scan import scan

    s = scan(a.data, a.model, out=a.out, defense=a.defense, preset=a.preset, sets=a.sets,
             image_size=a.image_size, device=a.device, quiet=a.quiet, seed=a.seed)
    acc = "-" if s["test_acc"] is None else f"{100 * s['test_acc']:.1f}%"
    print(f"{s['samples']} samples, {s['flagged']} flagged, {s['relabeled']} relabeled; "
          f"test ACC {acc}; {s['seconds']:.0f}s")
    print(f"wrote {a.out}/model.pt, suspicious.csv, scan.json")
    return 0


# -- interop: --format runs, export-config (owner: the adapters work) ----------------------
def _register_interop(sub, run_flags) -> None:
    from .interop import EXPORT_FORMATS
    from .registry import ADAPTERS

    p = sub.add_parser("run-record", help="run a defense on a toolbox's attack record and write "
                                          "the results in that toolbox's layout",
                       description="Outputs go where the toolbox keeps its own (BackdoorBench: "
                                   "record/<name>/defense/<defense>/; backdoor-toolbox: the "
                                   "poisoned-set folder); --out puts them elsewhere. --data-root "
                                   "is where the record's clean dataset lives.")
    run_flags(p)
    p.add_argument("--format", required=True, choices=[n for n in ADAPTERS.names()
                                                       if ADAPTERS.get(n).on_disk],
                   help="the record's toolbox format")
    p.add_argument("--record", required=True,
                   help="backdoorbench: record/<name>; backdoor-toolbox: poisoned_train_set/<ds>/<folder>; "
                        "arrays: an .npz with x_train, y_train[, is_clean, x_test, y_test]")
    p.add_argument("--defense", default="advrbd", help="registered defense (default advrbd)")
    p.add_argument("--trust-pickles", dest="trust_pickles", action="store_true",
                   help="load record files holding non-allow-listed pickled types "
                        "(can run code from the file: trusted files only)")
    p.add_argument("--option", dest="load_options", action="append", metavar="KEY=VALUE",
                   help="adapter option, e.g. --option triggers_dir=PATH --option test_alpha=0.2")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("export-config", help="write a toolbox's config file for one of our defenses")
    p.add_argument("--format", default="backdoorbench", choices=list(EXPORT_FORMATS))
    p.add_argument("--defense", default="advrbd")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--preset", help="paper | cpu | smoke (default paper)")
    p.add_argument("--out", required=True, help="file to write, e.g. config/defense/advrbd/cifar10.yaml")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="override a key before writing, e.g. --set precision=fp32 --set "
                        "train.epochs=50 --set defense.eps=0.05")


def _dispatch_interop(a, flags):
    if a.cmd == "run-record":
        import json

        from .cli import summary_table
        from .config import parse_set
        from .interop import run_record

        if not (a.format and a.record):  # also reached from `advrbd run --format F --record R`
            raise ValueError("defending a toolbox record needs both --format and --record")
        fl = flags(a)
        preset, device = fl.pop("preset"), fl.pop("device") or "auto"
        metrics = run_record(a.format, a.record, defense=a.defense or "advrbd", preset=preset,
                             sets=a.sets, device=device,
                             trust_pickles=getattr(a, "trust_pickles", False),
                             load_options=parse_set(getattr(a, "load_options", None)),
                             config=a.config, **fl)
        outputs = {k: v for k, v in metrics.pop("outputs").items() if isinstance(v, str)}
        if a.json:
            print(json.dumps({**metrics, "outputs": outputs}, indent=2, default=str))
        else:
            print(summary_table([metrics]))
            for key, path in outputs.items():
                print(f"{key}: {path}")
        return 0
    if a.cmd == "export-config":
        from .config import atomic_write_text
        from .interop import export_config

        atomic_write_text(a.out, export_config(a.format, a.defense, a.dataset, a.preset, a.sets))
        print(f"wrote {a.out}")
        return 0
    return None

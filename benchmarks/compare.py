"""The side-by-side grid of issue 5: all eight attacks x (none, the seven baselines of the
AdvrBD paper, spectral, ac, advrbd) on the cpu preset, seed 0, next to the paper's CIFAR-10
numbers (ResNet-18, full CIFAR-10: a different scale, so compare trends, not values).

Usage: python benchmarks/compare.py [--preset cpu] [--dataset npz:cifar10_subset.npz]
           [--attacks ...] [--defenses ...] [--seeds 0] [--out benchmarks/work] [--name compare_cpu]
           [--threads N] [--finished-only [--fill-from RESULTS.json]]
Writes benchmarks/results/<name>.{md,json} with the command, machine and date. Resumable:
finished cells are skipped, so re-running after an interruption continues the grid.
``--finished-only`` trains nothing and tabulates the finished cells (run several copies with
disjoint --attacks and --threads 1, then collect them with this flag). ``--fill-from``
(with ``--finished-only``, one seed) takes each cell not finished here from an earlier results
file of this script (e.g. when the work folder was lost between sessions); the table names
those cells and that file's date and machine. Each row keeps the time_ratio measured in its
own run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import torch

from _common import ATTACKS, RESULTS, WORK, header, machine
from advrbd_plugin.compare import AVERAGE, compare, summarize, write_compare
from advrbd_plugin.config import atomic_write_text
from advrbd_plugin.registry import DEFENSES
from advrbd_plugin.report import fmt_pct, markdown_table
from advrbd_plugin.runner import dataset_label

DEFENSES_GRID = ["none", "finetuning", "fineprune", "cutmix", "clp", "dbr", "scanft", "abl",
                 "spectral", "ac", "advrbd", "advrbd_paper"]

# The AdvrBD paper (arXiv:2405.12719v1), CIFAR-10 rows of Table II (first five attacks) and
# Table III (adaptive attacks): ACC ASR pairs for none, finetuning, fineprune, cutmix, clp,
# dbr, scanft, abl, advrbd, in %.
_PAPER_ORDER = ["none", "finetuning", "fineprune", "cutmix", "clp", "dbr", "scanft", "abl", "advrbd"]
_PAPER_CIFAR10 = {
    "badnet": "92.00 95.20 83.30 96.81 75.05 93.19 81.21 83.30 34.18 0.55 67.47 1.21 69.89 2.09 71.98 0.00 85.72 0.00",
    "blend": "84.50 99.90 84.62 100.00 79.23 98.79 80.44 99.67 51.00 3.52 37.03 98.46 78.57 1.43 82.20 5.71 85.71 0.00",
    "sig": "84.70 95.40 82.31 95.93 80.88 90.11 79.12 99.12 37.47 71.97 38.57 93.52 66.92 3.63 85.93 48.35 87.69 2.64",
    "wanet": "82.80 51.30 83.41 70.33 79.78 61.65 76.70 31.10 12.75 78.02 26.70 6.15 56.70 60.77 83.74 88.57 83.63 0.00",
    "physicalba": "91.60 100.00 86.04 100.00 80.11 49.78 85.38 79.23 27.47 0.00 30.55 5.71 79.01 0.33 87.14 0.99 82.97 0.00",
    "tact": "82.10 63.20 82.63 65.71 75.05 65.71 78.68 41.43 37.91 3.08 77.58 63.19 72.42 62.20 85.16 48.02 82.42 0.00",
    "adaptive_blend": "84.00 53.30 82.09 66.48 80.88 54.40 74.95 49.12 49.45 5.49 45.27 12.09 78.90 0.22 88.68 3.41 83.30 0.00",
    "adaptive_patch": "84.80 37.30 84.07 49.78 82.42 0.11 61.65 6.48 70.33 2.09 80.22 25.27 72.64 0.00 83.30 99.34 82.86 0.00",
}


def paper_cifar10() -> dict[tuple[str, str], tuple[float, float]]:
    """(attack, defense) -> (ACC, ASR) in % from the paper's CIFAR-10 tables."""
    out = {}
    for attack, line in _PAPER_CIFAR10.items():
        v = [float(x) for x in line.split()]
        for i, defense in enumerate(_PAPER_ORDER):
            out[attack, defense] = (v[2 * i], v[2 * i + 1])
    return out


def render(rows: list[dict], meta: dict, report_md: str) -> str:
    paper = paper_cifar10()
    lines = header(f"Baselines side by side ({meta['preset']} preset, {meta['dataset']})", meta)
    lines += ["## Defenses and their data", ""]
    info = [[d, "yes" if DEFENSES.get(d).requires_clean_data else "no",
             "post-training (shares the backdoored model)" if DEFENSES.get(d).needs_trained_model
             else "training-time (trains from scratch)"] for d in meta["defenses"]]
    lines += [markdown_table(["defense", "reserved clean data", "kind"], info),
              "A post-training defense's seconds (and time_ratio) exclude the backdoored model's "
              "training, which the `none` cell pays once; its full cost from data is 1 + time_ratio "
              "plain trainings.", ""]
    lines += ["## Our grid", "", report_md.split("\n", 2)[2].strip(), ""]
    filled = meta.get("filled_from")
    if filled and filled["cells"]:
        taken = [a if len(ds) == len(meta["defenses"]) else f"{a} ({', '.join(ds)})"
                 for a, ds in filled["cells"].items()]
        lines += [f"Not re-run here: {'; '.join(taken)}; taken from {filled['file']}, each row "
                  "with the time_ratio measured in that run.", ""]
    ours = {(r["attack"], r["defense"]): r for r in rows if r["attack"] != AVERAGE}
    side, far = [], []
    for (attack, defense), (p_acc, p_asr) in paper.items():
        r = ours.get((attack, defense))
        if r is None or r["asr"] is None:
            continue
        side.append([attack, defense, fmt_pct(r["acc"]), fmt_pct(r["asr"]), f"{p_acc:.1f}", f"{p_asr:.1f}"])
        if abs(100 * r["asr"] - p_asr) > 50:
            far.append(f"{defense} on {attack}: ASR {fmt_pct(r['asr'])}% here, {p_asr:.1f}% in the paper")
    lines += ["## Next to the paper's CIFAR-10 numbers (ResNet-18, full data, 100 epochs)", "",
              "The scale differs (our subset, model and epochs are the cpu preset's), so trends "
              "are comparable, values are not.", "",
              markdown_table(["attack", "defense", "ACC % (ours)", "ASR % (ours)", "ACC % (paper)",
                              "ASR % (paper)"], side)]
    lines += ["Cells whose ASR departs from the paper's by more than 50 points:", ""]
    lines += [f"- {f}" for f in far] or ["- none"]
    return "\n".join(lines) + "\n"


def fill_from(ap: argparse.ArgumentParser, path: str, rows: list[dict], meta: dict) -> list[dict]:
    """The summary rows with every cell not finished here taken from the earlier results file
    ``path`` (same dataset and preset) when it has that cell; records the file and the cells
    taken, {attack: [defense, ...]}, in ``meta["filled_from"]``."""
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
        mach, old_rows = old["machine"], old["rows"]
        same = (old["dataset"], old["preset"]) == (meta["dataset"], meta["preset"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"--fill-from {path!r}: expected a results JSON written by this script (keys "
                 f"'date', 'machine', 'dataset', 'preset', 'rows'); {type(e).__name__}: {e}")
    if not same:
        ap.error(f"--fill-from {path!r}: its dataset/preset {old['dataset']}/{old['preset']} differ "
                 f"from this run's {meta['dataset']}/{meta['preset']}")
    here = {(r["attack"], r["defense"]): r for r in rows if r["attack"] != AVERAGE}
    there = {(r["attack"], r["defense"]): r for r in old_rows if r["attack"] != AVERAGE}
    cells, taken = [], {}
    for key in ((a, d) for a in meta["attacks"] for d in meta["defenses"]):
        if key in here:
            cells.append(here[key])
        elif key in there:
            cells.append(there[key])
            taken.setdefault(key[0], []).append(key[1])
    meta["filled_from"] = {"file": f"{path} ({old['date']}, {mach.get('cpu_model') or mach['processor']}, "
                                   f"ISA {mach.get('isa')}, AMX {mach.get('amx')})", "cells": taken}
    return summarize(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--dataset", default="npz:cifar10_subset.npz")
    ap.add_argument("--attacks", nargs="+", default=ATTACKS)
    ap.add_argument("--defenses", nargs="+", default=DEFENSES_GRID)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", default=str(WORK))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (1 avoids OpenMP "
                                                "stalls when other jobs share the cores)")
    ap.add_argument("--name", default="compare_cpu", help="results file stem")
    ap.add_argument("--finished-only", action="store_true", help="train nothing; tabulate the "
                    "cells already finished (to collect copies of this script run in parallel)")
    ap.add_argument("--fill-from", metavar="RESULTS_JSON", help="with --finished-only and one "
                    "seed: an earlier results file of this script; a cell not finished here is "
                    "taken from it")
    a = ap.parse_args()
    if a.fill_from and (not a.finished_only or len(a.seeds) != 1):
        ap.error("--fill-from needs --finished-only and a single seed")
    if a.threads:
        torch.set_num_threads(a.threads)
    command = "python benchmarks/compare.py " + shlex.join(sys.argv[1:])
    report_dir = Path(a.out) / dataset_label(a.dataset) / "compare"
    rows = compare(a.dataset, a.attacks, a.defenses, a.seeds, preset=a.preset, out=a.out,
                   sets=a.sets, quiet=True, report_dir=report_dir,
                   finished_only=a.finished_only)
    meta = {"command": command.strip(), "date": datetime.date.today().isoformat(),
            "machine": machine(), "dataset": a.dataset, "preset": a.preset,
            "attacks": a.attacks, "defenses": ["none"] + [d for d in a.defenses if d != "none"],
            "seeds": a.seeds, "sets": a.sets,
            "clean_data_defenses": [d for d in a.defenses if DEFENSES.get(d).requires_clean_data]}
    if a.fill_from:
        rows = fill_from(ap, a.fill_from, rows, meta)
        write_compare(rows, [r for r in rows if r["attack"] != AVERAGE], report_dir, {k: meta[k] for k in ("dataset", "preset", "attacks",
                                                                    "defenses", "seeds", "sets")})
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{a.name}.md",
                      render(rows, meta, (report_dir / "compare.md").read_text()))
    atomic_write_text(RESULTS / f"{a.name}.json", json.dumps({**meta, "rows": rows}, indent=2))
    print(f"wrote {RESULTS / a.name}.md and .json")


if __name__ == "__main__":
    main()

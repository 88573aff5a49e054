"""AdvrBD (or any defenses) against no defense, per attack, on the cpu preset (issue 4).

Usage: python benchmarks/defense.py [--preset cpu] [--defenses none advrbd] [--attacks all]
           [--ratio R] [--set KEY=VALUE ...] [--threads N] [--name STEM] [--finished-only]
           [--fill-from RESULTS.json ...]
``--attacks all`` is the paper's eight; ``none`` (no attack) measures the cost on clean data.
``--ratio`` overrides every attack's poison ratio (paper Table V); those cells live in their
own work folder. Writes benchmarks/results/<name>.{md,json} (default advrbd_<preset>, with a
``_r<ratio>`` suffix when --ratio is given): rows {"attack", "defense", "acc", "asr", "ra",
"tpr", "fpr", "precision", "auroc", "seconds", "time_ratio"}, fractions in [0, 1];
time_ratio = seconds / the no-defense run's seconds for the same attack (same work
folder, same --threads). Resumable: finished cells are skipped. ``--finished-only`` trains
nothing: it writes the table of the cells already finished (to collect the cells of several
copies of the script run in parallel). ``--fill-from`` (with ``--finished-only``) takes the
rows of unfinished cells from earlier results files, the first file holding a cell winning: a
whole attack when its no-defense cell is not finished here, else cell by cell, each row keeping
the time_ratio measured in its own run; the table marks them and names each file's date and
machine.
"""
from __future__ import annotations

import argparse
import json

import torch

from _common import ATTACKS, WORK, header, meta, write
from advrbd_plugin import runner
from advrbd_plugin.report import fmt_pct, markdown_table

COLS = ("acc", "asr", "ra", "tpr", "fpr", "precision")


def _row(m: dict) -> dict:
    det = m.get("detection") or {}
    extra = (m.get("result") or {}).get("extra") or {}
    return {"attack": m["attack"], "defense": m["defense"], "acc": m["acc"], "asr": m["asr"],
            "ra": m["ra"], "tpr": det.get("tpr"), "fpr": det.get("fpr"),
            "precision": det.get("precision"), "auroc": det.get("auroc"),
            "seconds": m["seconds"], "time_ratio": None, "poisoned": m["poisoned"],
            "flagged": det.get("flagged"), "timings": (m.get("result") or {}).get("timings"),
            "clean_part_per_class": extra.get("clean_part_per_class"),
            "suspected_targets": extra.get("suspected_targets"), "named_by": extra.get("named_by")}


def _mean(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return sum(v) / len(v) if v else None


def _report(a, name, sets, attacks, defenses, rows) -> None:
    """Write the table of the rows so far (called after every cell, so a cut run keeps its cells)."""
    info = meta("defense.py", preset=a.preset, dataset=a.dataset, seed=a.seed, sets=sets,
                attacks=attacks, defenses=defenses)
    table = [[r["attack"] + (" (*)" if r.get("from") else ""), r["defense"],
              *(fmt_pct(r[k]) for k in COLS), fmt_pct(r["auroc"]),
              f"{r['seconds']:.0f}", "-" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}"]
             for r in rows]
    for d in defenses:
        mine = [r for r in rows if r["defense"] == d and r["attack"] != "none"]
        if len(mine) > 1:
            table.append([f"**average ({len(mine)} attacks)**", d,
                          *(fmt_pct(_mean(mine, k)) for k in COLS), fmt_pct(_mean(mine, "auroc")),
                          f"{_mean(mine, 'seconds'):.0f}", f"{_mean(mine, 'time_ratio'):.2f}"])
    md = header(f"{', '.join(defenses)} per attack ({a.preset} preset, {a.dataset})", info) + [
        f"Poison ratio {a.ratio if a.ratio is not None else 'per attack (0.05)'}, target 1, seed "
        f"{a.seed}. TPR/FPR/precision: the defense's flagged set against the true poison (cover "
        "samples excluded); AUROC of its per-sample scores. time_ratio: wall time / the no-defense "
        "training of the same attack.", "",
        markdown_table(["attack", "defense", "ACC %", "ASR %", "RA %", "TPR %", "FPR %",
                        "precision %", "AUROC %", "seconds", "time_ratio"], table)]
    older = sorted({r["from"] for r in rows if r.get("from")})
    if older:
        md += ["", "(*) not re-run here: row taken from " + "; ".join(older) + " (an earlier "
               "run, named with its date and machine; its time_ratio was measured there)."]
    write(name, "\n".join(md) + "\n", info, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--dataset", default="npz:cifar10_subset.npz")
    ap.add_argument("--attacks", nargs="+", default=["all"])
    ap.add_argument("--defenses", nargs="+", default=["none", "advrbd"])
    ap.add_argument("--ratio", type=float, help="poison ratio for every attack (default: each attack's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, help="torch intra-op threads")
    ap.add_argument("--name", help="results file stem")
    ap.add_argument("--finished-only", action="store_true",
                    help="train nothing; tabulate the cells that are already finished")
    ap.add_argument("--fill-from", nargs="+", default=[], metavar="RESULTS.json",
                    help="with --finished-only: earlier results JSONs whose rows stand in for "
                    "unfinished cells (marked in the table; the first file holding a cell wins)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    attacks = [x for name in a.attacks for x in (ATTACKS if name == "all" else [name])]
    defenses = ["none"] + [d for d in a.defenses if d != "none"]
    sets, work, name = list(a.sets), WORK, a.name or f"advrbd_{a.preset}"
    if a.ratio is not None:
        sets.append(f"attack.poison_ratio={a.ratio}")
        work, name = WORK / f"ratio_{a.ratio}", a.name or f"advrbd_{a.preset}_r{a.ratio}"
    if a.fill_from and not a.finished_only:
        ap.error("--fill-from needs --finished-only")
    older = {}
    for path in reversed(a.fill_from):  # the first file holding a cell wins
        try:
            old = json.loads(open(path, encoding="utf-8").read())
            mach, old_rows = old["machine"], old["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--fill-from {path!r}: expected a results JSON written by this script "
                     f"(keys 'date', 'machine', 'rows'); {type(e).__name__}: {e}")
        tag = (f"{path} ({old['date']}, {mach.get('cpu_model') or mach['processor']}, "
               f"ISA {mach.get('isa')}, AMX {mach.get('amx')})")
        # a row the earlier file itself took from a still earlier one keeps its first origin
        older.update({(r["attack"], r["defense"]): {**r, "from": r.get("from") or tag}
                      for r in old_rows})
    rows = []
    for attack in attacks:
        kw = dict(dataset=a.dataset, attack=attack, seed=a.seed, preset=a.preset, out=str(work),
                  quiet=True, sets=sets if attack != "none" else a.sets)
        done = {d: runner.finished(defense=d, **kw) for d in defenses} if a.finished_only else {}
        if older and done.get("none") is None and all((attack, d) in older for d in defenses):
            # no baseline here: the attack is taken whole from one run (one machine's timings)
            rows += [older[attack, d] for d in defenses]
            print(f"{attack:15s} from {older[attack, 'none']['from']}", flush=True)
            continue
        base = None
        for defense in defenses:
            if a.finished_only:
                m = done[defense]
                if m is None and (attack, defense) in older:
                    # a row of the earlier run keeps the time_ratio measured in that run
                    rows.append(older[attack, defense])
                    print(f"{attack:15s} {defense:8s} from {older[attack, defense]['from']}", flush=True)
                    continue
                if m is None:
                    print(f"{attack:15s} {defense:8s} not finished: skipped", flush=True)
                    continue
            else:
                m = runner.run(defense=defense, **kw)
            row = _row(m)
            base = row["seconds"] if defense == "none" else base
            row["time_ratio"] = round(row["seconds"] / base, 3) if base else None
            rows.append(row)
            print(f"{attack:15s} {defense:8s} " + "  ".join(
                f"{k.upper()} {fmt_pct(row[k])}" for k in COLS) + f"  {row['seconds']:.0f}s "
                f"x{row['time_ratio']}", flush=True)
            _report(a, name, sets, attacks, defenses, rows)
    _report(a, name, sets, attacks, defenses, rows)  # also when the last attacks were filled in


if __name__ == "__main__":
    main()

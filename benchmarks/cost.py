"""AdvrBD's cost against its floor (one plain training), per stage; optionally against an
earlier revision of the code, both measured in the same run.

Usage: python benchmarks/cost.py [--dataset D (default: the preset's, else digits)] [--attack badnet] [--preset P]
           [--set KEY=VALUE ...] [--rev GIT_REV] [--repeats 2] [--threads N] [--name STEM]
           [--from-results results/advrbd_cpu.json]
Each cell (``none`` and ``advrbd``) runs as its own ``python -m advrbd_plugin run`` process
in a fresh folder, so no cache is shared; with ``--rev`` the same cells also run on a git
worktree of that revision (interleaved: rev none, current none, rev advrbd, current
advrbd, per repeat), with the precision the current engine resolves here passed to both.
``--from-results`` adds the per-stage shares of an earlier results file's cells.
Writes benchmarks/results/<STEM>.{md,json} (default advrbd_cost).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import header, meta, write
from advrbd_plugin.data import shared_data_dir
from advrbd_plugin.engine import Engine
from advrbd_plugin.report import markdown_table

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("warmup", "cluster", "partition", "enhance", "clean", "relearn")  # both variants' stages


def cell(tree: Path, out: Path, defense: str, a, precision: str) -> dict:
    """metrics.json of one fresh cell run by the code in ``tree``."""
    cmd = [sys.executable, "-m", "advrbd_plugin", "run", "--attack", a.attack,
           "--defense", defense, "--out", str(out), "--quiet", "--json", "--precision", precision,
           "--no-resume"]
    cmd += ["--preset", a.preset] if a.preset else []
    cmd += ["--dataset", a.dataset] if a.dataset or not a.preset else []
    for s in a.sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(tree), "ADVRBD_DATA_DIR": str(shared_data_dir())}
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def shares(none: dict, ours: dict) -> dict:
    """Per-stage seconds / the plain training's seconds, and the total ratio."""
    base = none["seconds"]
    t = (ours.get("result") or {}).get("timings") or {}
    row = {f"{k}_share": round(t[k] / base, 3) for k in STAGES if k in t}
    staged = sum(t.get(k, 0.0) for k in STAGES)
    row.update({"other_share": round((ours["seconds"] - staged) / base, 3),
                "time_ratio": round(ours["seconds"] / base, 3), "none_seconds": base,
                "advrbd_seconds": ours["seconds"], "acc": ours["acc"], "asr": ours["asr"],
                "none_acc": none["acc"], "none_asr": none["asr"]})
    return row


def from_results(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    rows = data["rows"]
    nones = {r["attack"]: r for r in rows if r["defense"] == "none"}
    out = []
    for r in rows:
        if r["defense"] == "advrbd" and r["attack"] in nones and r.get("timings"):
            base = nones[r["attack"]]["seconds"]
            row = {"attack": r["attack"], **{f"{k}_share": round(r["timings"][k] / base, 3)
                                             for k in STAGES if k in r["timings"]}}
            row["other_share"] = round((r["seconds"] - sum(r["timings"].get(k, 0) for k in STAGES)) / base, 3)
            row["time_ratio"] = round(r["seconds"] / base, 3)
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="default: the preset's, else digits")
    ap.add_argument("--attack", default="badnet")
    ap.add_argument("--preset")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rev", help="also measure this git revision (a worktree), in the same run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--name", default="advrbd_cost")
    ap.add_argument("--from-results", help="a benchmarks/results JSON with per-stage timings")
    a = ap.parse_args()
    if not a.dataset and not a.preset:
        a.dataset = "digits"
    eng = Engine(device="cpu", quiet=True)
    trees = {"current": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if a.rev:
            wt = Path(tmp) / "rev"
            subprocess.run(["git", "worktree", "add", "--detach", str(wt), a.rev], cwd=ROOT,
                           check=True, capture_output=True)
            trees = {a.rev: wt, "current": ROOT}
        try:
            runs: dict[str, list[dict]] = {k: [] for k in trees}
            for rep in range(a.repeats):
                got = {}
                for defense in ("none", "advrbd"):
                    for name, tree in trees.items():
                        got[(name, defense)] = cell(tree, Path(tmp) / f"{name}-{rep}", defense, a,
                                                    eng.precision)
                        print(name, defense, rep, got[(name, defense)]["seconds"], flush=True)
                for name in trees:
                    runs[name].append({"repeat": rep, **shares(got[(name, "none")], got[(name, "advrbd")])})
        finally:
            if a.rev:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees[a.rev])], cwd=ROOT,
                               capture_output=True)
    info = meta("cost.py", dataset=a.dataset, attack=a.attack, preset=a.preset, sets=a.sets,
                rev=a.rev, precision=eng.precision, precision_reason=eng.precision_reason)
    cols = [f"{k}_share" for k in STAGES] + ["other_share", "time_ratio"]
    table = [[name, r["repeat"], *(r.get(c, "-") for c in cols), f"{r['none_seconds']:.1f}",
              f"{r['advrbd_seconds']:.1f}", f"{100 * r['acc']:.1f}", f"{100 * r['asr']:.1f}"]
             for name, rs in runs.items() for r in rs]
    md = header("AdvrBD's cost per stage, as a share of one plain training", info) + [
        f"{a.dataset or 'the preset dataset'} / {a.attack}{' / preset ' + a.preset if a.preset else ''}"
        f"{' / ' + ' '.join(a.sets) if a.sets else ''}; precision {eng.precision} "
        f"({eng.precision_reason}). Each stage's seconds / the `none` cell's seconds of the same "
        "code and repeat; `other` is what no stage timer covers (split, relabel pass, histories). "
        "The floor of a training-time defense is 1.0 (one plain training).", "",
        markdown_table(["code", "repeat", *STAGES, "other", "time_ratio", "none s", "advrbd s",
                        "ACC %", "ASR %"], table)]
    rows = [{"code": name, **r} for name, rs in runs.items() for r in rs]
    if a.from_results:
        earlier = from_results(Path(a.from_results) if Path(a.from_results).is_absolute()
                               else Path(__file__).parent / a.from_results)
        md += ["", f"## The cpu preset's cells, from `{a.from_results}`", "",
               markdown_table(["attack", *STAGES, "other", "time_ratio"],
                              [[r["attack"], *(r.get(c, "-") for c in cols)] for r in earlier])]
        info["from_results"] = earlier
    write(a.name, "\n".join(md) + "\n", info, rows)


if __name__ == "__main__":
    main()

"""Side-by-side comparison: run a grid of (attack, defense, seed) cells and tabulate it in
the layout of the AdvrBD paper's Table II.

Every cell goes through ``runner.run``, so finished cells (same config hash) are skipped
and an interrupted grid resumes; the backdoored model is trained once per (dataset,
attack, seed) by the ``none`` cell, which always runs first, and is shared by the
post-training defenses. Writes ``compare.md``, ``compare.csv``, ``compare.json`` and
``compare_scatter.png`` (ACC vs ASR per defense).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import runner
from .config import atomic_write_text
from .report import _savefig, csv_text, fmt_pct, markdown_table

__all__ = ["compare", "summarize", "write_compare", "METRICS"]

#: Per-cell numbers kept in the rows (fractions in [0, 1] except seconds, time_ratio, clean_data).
METRICS = ("acc", "asr", "ra", "tpr", "fpr", "precision", "seconds", "time_ratio", "clean_data")
AVERAGE = "Average"


def compare(dataset: str, attacks: Sequence[str], defenses: Sequence[str],
            seeds: Sequence[int] = (0,), preset: Optional[str] = None,
            out: Optional[str | os.PathLike] = None, sets: Optional[list[str]] = None, *,
            config: Optional[str | os.PathLike] = None,
            report_dir: Optional[str | os.PathLike] = None, finished_only: bool = False,
            backend: str = "local", address: Optional[str] = None, num_cpus: float = 1,
            num_gpus: Optional[float] = None, **flags) -> list[dict]:
    """Run the grid and write the comparison files.

    dataset, preset, out, sets, config, flags: as for ``runner.run`` (flags: model=,
    device=, quiet=, ...). The ``none`` defense is added and run first for every attack
    and seed. report_dir: where the files go (default ``<out>/<dataset>/compare``).
    finished_only: train nothing, tabulate the cells already finished (to collect a grid
    computed by several processes); unfinished cells are left out of the table.
    backend: 'local' (cells one after another in this process) or 'ray' (each cell a Ray
    task, ``grid_ray.py``; ``address`` of a running cluster or None for a local one,
    ``num_cpus`` / ``num_gpus`` per task). Both give the same cells and tables.
    Returns the summary rows (one per attack and defense, then the Average rows), each
    {"attack", "defense", "acc", "asr", "ra", "tpr", "fpr", "precision", "seconds",
    "time_ratio", "clean_data", "seeds", and "<metric>_std" when several seeds ran}.
    """
    if not attacks or not defenses or not seeds:
        raise ValueError(f"compare: expected at least one attack, defense and seed; found "
                         f"attacks={list(attacks)}, defenses={list(defenses)}, seeds={list(seeds)}")
    if backend not in ("local", "ray"):
        raise ValueError(f"compare: backend expected 'local' or 'ray', found {backend!r}")
    order = ["none"] + [d for d in dict.fromkeys(defenses) if d != "none"]
    out = None if out is None else os.fspath(out)
    kws = [dict(sets=sets, dataset=dataset, attack=attack, defense=defense, seed=seed,
                preset=preset, out=out, **flags)
           for attack in dict.fromkeys(attacks) for seed in dict.fromkeys(seeds) for defense in order]
    if finished_only:
        done = [runner.finished(config, **kw) for kw in kws]
    elif backend == "ray":
        from .grid_ray import run_cells

        done = run_cells(config, kws, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    else:
        done = [runner.run(config, **kw) for kw in kws]
    cells = [_cell(m) for m in done if m is not None]
    folders = [Path(m["run_folder"]) for m in done if m is not None]
    if not cells:
        raise ValueError("compare: no finished cell to tabulate; run the grid without "
                         "finished_only first")
    _add_time_ratio(cells)
    rows = summarize(cells)
    if report_dir is None:  # run folders are <out>/<dataset>/<attack>/<defense>/<seed>
        report_dir = folders[0].parents[2] / "compare"
    write_compare(rows, cells, Path(report_dir), {
        "dataset": dataset, "preset": preset, "attacks": list(dict.fromkeys(attacks)),
        "defenses": order, "seeds": list(dict.fromkeys(seeds)), "sets": list(sets or [])})
    return rows


def _cell(m: dict) -> dict:
    """One run's metrics.json -> a flat row."""
    det = m.get("detection") or {}
    return {"attack": m["attack"], "defense": m["defense"], "seed": m["seed"],
            "acc": m["acc"], "asr": m["asr"], "ra": m["ra"], "tpr": det.get("tpr"),
            "fpr": det.get("fpr"), "precision": det.get("precision"), "seconds": m["seconds"],
            "time_ratio": None, "clean_data": m.get("clean_data", 0),
            "run_folder": m["run_folder"]}


def _add_time_ratio(cells: list[dict]) -> None:
    """time_ratio = seconds / the none cell's seconds for the same attack and seed."""
    base = {(c["attack"], c["seed"]): c["seconds"] for c in cells if c["defense"] == "none"}
    for c in cells:
        b = base.get((c["attack"], c["seed"]))
        c["time_ratio"] = round(c["seconds"] / b, 3) if b else None


def _mean_std(values: Iterable[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return None, None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return mean, std


def summarize(cells: list[dict]) -> list[dict]:
    """Per-seed cells -> one row per (attack, defense) with the mean over seeds (and
    ``<metric>_std``, the sample std, when there are several), then one Average row per
    defense: the mean over attacks of the per-attack means, taken over the attacks every
    defense has (all of them in a finished grid), with ``"attacks"`` = how many."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["attack"], c["defense"]), []).append(c)
    rows = []
    for (attack, defense), group in groups.items():
        row = {"attack": attack, "defense": defense, "seeds": len(group)}
        for k in METRICS:
            mean, std = _mean_std(c[k] for c in group)
            row[k] = mean
            if len(group) > 1:
                row[f"{k}_std"] = std
        rows.append(row)
    complete = _complete_attacks(rows)
    for defense in dict.fromkeys(r["defense"] for r in rows):
        mine = [r for r in rows if r["defense"] == defense and r["attack"] in complete]
        if not mine:
            continue
        avg = {"attack": AVERAGE, "defense": defense, "seeds": min(r["seeds"] for r in mine),
               "attacks": len(mine)}
        avg.update({k: _mean_std(r[k] for r in mine)[0] for k in METRICS})
        rows.append(avg)
    return rows


def _complete_attacks(rows: list[dict]) -> list[str]:
    """The attacks (Average excluded) that have a row for every defense present in ``rows``."""
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    have = {(r["attack"], r["defense"]) for r in rows}
    return [a for a in dict.fromkeys(r["attack"] for r in rows)
            if a != AVERAGE and all((a, d) in have for d in defenses)]


def _partial_note(rows: list[dict]) -> str:
    """For an unfinished grid, a line naming the attacks the Average row covers."""
    complete = _complete_attacks(rows)
    if len(complete) == len({r["attack"] for r in rows} - {AVERAGE}):
        return ""
    return (f"\nUnfinished grid: the Average row covers only the attacks every defense "
            f"finished: {', '.join(complete) or 'none'}.\n")


def _pct(row: dict, key: str) -> str:
    s = fmt_pct(row.get(key), 2)
    std = row.get(f"{key}_std")
    return s if std is None or row.get(key) is None else f"{s} ± {100 * std:.2f}"


def write_compare(rows: list[dict], cells: list[dict], folder: Path, meta: dict) -> None:
    """compare.md (Table II layout + details), compare.csv, compare.json, compare_scatter.png."""
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    by = {(r["attack"], r["defense"]): r for r in rows}
    header = ["Attack"] + [f"{d} {m}" for d in defenses for m in ("ACC", "ASR")]
    table = [[a] + [_pct(by[a, d], m) if (a, d) in by else "-"
                    for d in defenses for m in ("acc", "asr")] for a in attacks]
    detail = [[r["attack"], r["defense"], _pct(r, "acc"), _pct(r, "asr"), _pct(r, "ra"),
               fmt_pct(r["tpr"]), fmt_pct(r["fpr"]), fmt_pct(r["precision"]),
               f"{r['seconds']:.1f}", "-" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}",
               f"{r['clean_data']:.0f}"] for r in rows if r["attack"] != AVERAGE]
    clean_users = [d for d in defenses if any((by.get((a, d)) or {}).get("clean_data") for a in attacks)]
    md = (f"# Comparison on {meta['dataset']} (preset {meta['preset'] or 'paper'}, "
          f"seeds {meta['seeds']})\n\nACC / ASR in % (mean ± std over seeds when several). "
          "Rows are attacks, column pairs are defenses; the Average row is the mean over attacks.\n\n"
          + markdown_table(header, table) + _partial_note(rows)
          + "\nRA, detection (TPR / FPR / precision of the flagged training samples), wall time "
            "and time_ratio = defense seconds / the `none` defense's seconds (same attack and "
            "seed); clean_data = reserved clean samples the defense used.\n\n"
          + markdown_table(["attack", "defense", "ACC %", "ASR %", "RA %", "TPR %", "FPR %",
                            "precision %", "seconds", "time_ratio", "clean_data"], detail)
          + f"\nDefenses that used reserved clean data: {', '.join(clean_users) or 'none'}.\n")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "compare.md", md)
    keys = ["attack", "defense", *METRICS, "seeds"]
    keys += sorted({k for r in rows for k in r if k.endswith("_std")})
    atomic_write_text(folder / "compare.csv", csv_text(keys, [[r.get(k) for k in keys] for r in rows]))
    atomic_write_text(folder / "compare.json", json.dumps({**meta, "rows": rows, "cells": cells}, indent=2))
    _scatter(rows, folder / "compare_scatter.png")


def _scatter(rows: list[dict], path: Path) -> None:
    """ACC (x) vs ASR (y) in %, one colour per defense, one point per attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    markers = "osD^vP*Xh<>"
    for i, defense in enumerate(dict.fromkeys(r["defense"] for r in rows)):
        pts = [(100 * r["acc"], 100 * r["asr"]) for r in rows if r["defense"] == defense
               and r["attack"] != AVERAGE and r["acc"] is not None and r["asr"] is not None]
        if pts:
            ax.scatter(*zip(*pts), label=defense, alpha=0.8, marker=markers[i % len(markers)])
    ax.set_xlabel("ACC %")
    ax.set_ylabel("ASR %")
    ax.set_ylim(-3, 103)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("ACC vs ASR per defense (one point per attack)")
    _savefig(fig, path)
    plt.close(fig)

"""No-defense ACC / ASR / RA of the eight attacks on the cpu preset (issue 3).

Usage: python benchmarks/attacks.py [--preset cpu] [--dataset npz:cifar10_subset.npz]
           [--attacks ...] [--seed 0] [--threads N]
Writes benchmarks/results/attacks_<preset>.{md,json}; rows
{"attack", "defense": "none", "acc", "asr", "ra", "seconds"}, fractions in [0, 1].
Resumable: each cell is a run folder under benchmarks/work/; finished cells are skipped.
"""
from __future__ import annotations

import argparse

import torch

from _common import ATTACKS, WORK, header, meta, write
from advrbd_plugin import runner
from advrbd_plugin.report import fmt_pct, markdown_table

# The AdvrBD paper's no-defense ASR (%) on CIFAR-10 / ResNet-18 (Tables II and III).
PAPER_ASR = {"badnet": 95.2, "blend": 99.9, "sig": 95.4, "wanet": 51.3, "physicalba": 100.0,
             "tact": 63.2, "adaptive_blend": 53.3, "adaptive_patch": 37.3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--dataset", default="npz:cifar10_subset.npz")
    ap.add_argument("--attacks", nargs="+", default=ATTACKS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch intra-op threads")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for attack in a.attacks:
        m = runner.run(dataset=a.dataset, attack=attack, defense="none", seed=a.seed,
                       preset=a.preset, out=str(WORK), quiet=True)
        rows.append({"attack": attack, "defense": "none", "acc": m["acc"], "asr": m["asr"],
                     "ra": m["ra"], "seconds": m["seconds"], "poisoned": m["poisoned"],
                     "cover": m["cover"], "train_size": m["train_size"]})
        print(f"{attack:15s} ACC {fmt_pct(m['acc'])}  ASR {fmt_pct(m['asr'])}  "
              f"RA {fmt_pct(m['ra'])}  {m['seconds']:.0f}s", flush=True)
    info = meta("attacks.py", preset=a.preset, dataset=a.dataset, seed=a.seed)
    table = markdown_table(
        ["attack", "ACC %", "ASR %", "RA %", "poisoned / cover", "seconds", "paper ASR % (ResNet-18)"],
        [[r["attack"], fmt_pct(r["acc"]), fmt_pct(r["asr"]), fmt_pct(r["ra"]),
          f"{r['poisoned']} / {r['cover']}", f"{r['seconds']:.0f}", PAPER_ASR.get(r["attack"], "-")]
         for r in rows])
    md = header(f"Attacks without defense ({a.preset} preset, {a.dataset})", info) + [
        "Poison ratio 0.05, target 1 (TaCT source 0, adaptive cover rate 0.01); ASR counts "
        "triggered test inputs whose true label is not the target (TaCT: the source class).", "",
        table]
    write(f"attacks_{a.preset}", "\n".join(md) + "\n", info, rows)


if __name__ == "__main__":
    main()

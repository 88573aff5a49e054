"""Fuzz the readers of untrusted files: mutated bytes of each format's seed file.

Usage: python benchmarks/fuzz.py [--per-format 2500] [--seed 0]
Every outcome must be a load or a clean error of the package's own types
(``advrbd_plugin/fuzz.py``); writes benchmarks/results/fuzz.{md,json} with the inputs tried,
outcomes by kind and format, any uncaught exception (with the input's salt to replay it),
and whether a payload ever ran.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import header, meta, write
from advrbd_plugin import fuzz
from advrbd_plugin.report import markdown_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-format", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows, uncaught = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "PWNED"
        for fmt, seed in fuzz.SEEDS(str(marker)).items():
            counts: Counter = Counter()
            for i in range(a.per_format):
                salt = a.seed * 1_000_003 + i
                rng = random.Random(salt)
                data = seed
                for _ in range(rng.randint(1, 3)):
                    data = fuzz.mutate(data, rng)
                outcome = fuzz.attempt(fuzz.READERS[fmt], Path(tmp) / "input", data)
                counts["uncaught" if outcome.startswith("uncaught") else outcome] += 1
                if outcome.startswith("uncaught"):
                    uncaught.append({"format": fmt, "salt": salt, "outcome": outcome})
            rows.append({"format": fmt, "inputs": a.per_format, "loaded": counts["loaded"],
                         "clean_error": counts["clean error"], "uncaught": counts["uncaught"]})
            print(rows[-1], flush=True)
        payload_ran = marker.exists()
    seconds = time.perf_counter() - t0
    total = sum(r["inputs"] for r in rows)
    info = meta("fuzz.py", per_format=a.per_format, seed=a.seed, seconds=round(seconds, 1),
                total_inputs=total, payload_ran=payload_ran, uncaught=uncaught[:50])
    md = header("Fuzzing the readers of untrusted files", info) + [
        f"{total} mutated inputs in {seconds:.0f} s (flipped bytes, overwritten runs, cuts, "
        f"insertions; 1-3 mutations each). Uncaught exceptions: **{len(uncaught)}**. "
        f"Payload executions: **{int(payload_ran)}**.", "",
        markdown_table(["format (seed file)", "inputs", "loaded", "clean error", "uncaught"],
                       [[r["format"], r["inputs"], r["loaded"], r["clean_error"], r["uncaught"]]
                        for r in rows])]
    if uncaught:
        md += ["", "Uncaught (replay with the salt):", ""] + [
            f"- {u['format']}, salt {u['salt']}: {u['outcome']}" for u in uncaught[:20]]
    write("fuzz", "\n".join(md) + "\n", info, rows)


if __name__ == "__main__":
    main()

"""Training throughput of the engine: float32 vs bfloat16 autocast + channels_last.

Usage: python benchmarks/engine.py [--models resnet20 resnet9 resnet18] [--steps 8]
Writes benchmarks/results/engine_cpu.{md,json}. Both paths are timed in the same run,
alternating, on the same random 32x32 batches, after warm-up steps.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from advrbd_plugin.config import atomic_write_text
from advrbd_plugin.engine import Engine, TrainConfig
from advrbd_plugin.models import build_model
from advrbd_plugin.report import markdown_table

RESULTS = Path(__file__).parent / "results"


def throughput(name: str, precision: str, channels_last: bool, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = build_model(name, 10, input_size=32, in_channels=3)
    eng = Engine(device="cpu", precision=precision, channels_last=channels_last, quiet=True)
    n = batch * (steps + 2)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    data = eng.data(x, (0.5,) * 3, (0.25,) * 3)
    warm = TrainConfig(epochs=2 / (steps + 2), lr=0.01, batch_size=batch)
    eng.fit(model, data, y, warm)  # warm-up: allocations, oneDNN kernel selection
    cfg = TrainConfig(epochs=1.0, lr=0.01, batch_size=batch)
    t0 = time.perf_counter()
    eng.fit(model, data, y, cfg)
    return n // batch * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet9", "resnet18"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    rows = []
    for name in a.models:
        plain = throughput(name, "fp32", False, a.steps, a.batch)
        fast = throughput(name, "bf16", True, a.steps, a.batch)
        rows.append({"model": name, "fp32_img_s": round(plain, 1), "bf16_cl_img_s": round(fast, 1),
                     "speedup": round(fast / plain, 2)})
        print(rows[-1], flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    cmd = "python benchmarks/engine.py " + " ".join(f"--models {' '.join(a.models)} --steps {a.steps} --batch {a.batch}".split())
    out = {"command": cmd, "date": datetime.date.today().isoformat(), "machine": machine, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "engine_cpu.json", json.dumps(out, indent=2))
    md = (f"# Engine training throughput (CPU)\n\nCommand: `{cmd}`  \nMachine: {machine}  \nDate: {out['date']}\n\n"
          "Images/s of `Engine.fit` (SGD, on-device crop+flip augmentation, batch "
          f"{a.batch}, 32x32x3), float32 vs bfloat16 autocast + channels_last, measured in one run.\n\n")
    md += markdown_table(["model", "fp32 img/s", "bf16 + channels_last img/s", "speedup"],
                         [[r["model"], r["fp32_img_s"], r["bf16_cl_img_s"], f"{r['speedup']}x"] for r in rows])
    atomic_write_text(RESULTS / "engine_cpu.md", md)


if __name__ == "__main__":
    main()

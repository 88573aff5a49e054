"""Training throughput of the engine: float32 vs bfloat16 autocast (+ channels_last).

Usage: python benchmarks/engine.py [--models resnet20 resnet9 resnet18] [--steps 8] [--threads N]
Writes benchmarks/results/engine_cpu.{md,json}. All paths are timed in the same run on the
same random 32x32 batches, after warm-up steps; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import header, meta, write
from advrbd_plugin.engine import Engine, TrainConfig
from advrbd_plugin.models import build_model
from advrbd_plugin.report import markdown_table

PATHS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16_cl": ("bf16", True)}


def throughput(name: str, precision: str, channels_last: bool, steps: int, batch: int) -> float:
    """Images/s of Engine.fit over ``steps`` batches, after two warm-up steps."""
    torch.manual_seed(0)
    model = build_model(name, 10, input_size=32, in_channels=3)
    eng = Engine(device="cpu", precision=precision, channels_last=channels_last, quiet=True)
    n = batch * (steps + 2)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    data = eng.data(x, (0.5,) * 3, (0.25,) * 3)
    eng.fit(model, data, y, TrainConfig(epochs=2 / (steps + 2), lr=0.01, batch_size=batch))  # warm-up
    t0 = time.perf_counter()
    eng.fit(model, data, y, TrainConfig(epochs=1.0, lr=0.01, batch_size=batch))
    return n // batch * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet9", "resnet18"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, help="torch intra-op threads")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for name in a.models:
        ips = {k: round(throughput(name, p, cl, a.steps, a.batch), 1) for k, (p, cl) in PATHS.items()}
        rows.append({"model": name, "fp32_img_s": ips["fp32"], "bf16_img_s": ips["bf16"],
                     "bf16_cl_img_s": ips["bf16_cl"], "speedup": round(ips["bf16_cl"] / ips["fp32"], 2),
                     "speedup_bf16_only": round(ips["bf16"] / ips["fp32"], 2)})
        print(rows[-1], flush=True)
    info = meta("engine.py", steps=a.steps, batch=a.batch)
    md = header("Engine training throughput (CPU)", info) + [
        f"Images/s of `Engine.fit` (SGD, on-device crop+flip, batch {a.batch}, 32x32x3): float32, "
        "bfloat16 autocast, and bfloat16 autocast + channels_last (the engine's default fast "
        "path), measured in one run.", "",
        markdown_table(["model", "fp32 img/s", "bf16 img/s", "bf16 + channels_last img/s",
                        "speedup (default fast path)", "speedup (bf16 only)"],
                       [[r["model"], r["fp32_img_s"], r["bf16_img_s"], r["bf16_cl_img_s"],
                         f"{r['speedup']}x", f"{r['speedup_bf16_only']}x"] for r in rows])]
    write("engine_cpu", "\n".join(md) + "\n", info, rows)


if __name__ == "__main__":
    main()

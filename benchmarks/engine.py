"""Training throughput of the engine: float32 vs bfloat16 autocast (+ channels_last), each
also under torch.compile.

Usage: python benchmarks/engine.py [--models resnet20 resnet9 resnet18] [--steps 8] [--threads N]
       [--no-compile]
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

PATHS = {"fp32": ("fp32", False, False), "bf16": ("bf16", False, False),
         "bf16_cl": ("bf16", True, False)}
COMPILED = {"fp32_compile": ("fp32", False, True), "bf16_cl_compile": ("bf16", True, True)}


def throughput(name: str, precision: str, channels_last: bool, compile: bool, steps: int,
               batch: int) -> float:
    """Images/s of Engine.fit over ``steps`` batches, after two warm-up steps (which also
    absorb torch.compile's compilation)."""
    torch.manual_seed(0)
    model = build_model(name, 10, input_size=32, in_channels=3)
    eng = Engine(device="cpu", precision=precision, channels_last=channels_last, compile=compile,
                 quiet=True)
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
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile paths")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    paths = PATHS if a.no_compile else {**PATHS, **COMPILED}
    rows = []
    for name in a.models:
        row = {"model": name}
        for k, (p, cl, comp) in paths.items():
            row[f"{k}_img_s"] = round(throughput(name, p, cl, comp, a.steps, a.batch), 1)
            print(name, k, row[f"{k}_img_s"], flush=True)
        row.update({f"speedup_{k}": round(row[f"{k}_img_s"] / row["fp32_img_s"], 2)
                    for k in paths if k != "fp32"})
        rows.append(row)
    info = meta("engine.py", steps=a.steps, batch=a.batch)
    names = {"fp32": "fp32", "bf16": "bf16 (default on CPU)",
             "bf16_cl": "bf16 + channels_last (default on CUDA)",
             "fp32_compile": "fp32 + compile", "bf16_cl_compile": "bf16 + channels_last + compile"}
    md = header("Engine training throughput (CPU)", info) + [
        f"Images/s of `Engine.fit` (SGD, on-device crop+flip, batch {a.batch}, 32x32x3) per "
        "path, measured in one run; the speedup column is against plain float32.", "",
        markdown_table(["model", "path", "img/s", "speedup vs fp32"],
                       [[r["model"], names[k], r[f"{k}_img_s"],
                         "1.0x" if k == "fp32" else f"{r[f'speedup_{k}']}x"]
                        for r in rows for k in paths])]
    write("engine_cpu", "\n".join(md) + "\n", info, rows)


if __name__ == "__main__":
    main()

"""Engine throughput per path on this CPU, and what the engine's ``auto`` choices pick.

Usage: python benchmarks/engine.py [--models resnet20 resnet9 resnet18] [--steps 8] [--repeats 3]
       [--threads N] [--compile] [--paths P ...] [--name STEM]
Training: images/s of ``Engine.fit`` for fp32 and bf16 autocast, each with and without
channels_last (``--compile`` adds the torch.compile paths), and for ``auto`` (precision and
channels_last as the engine resolves them here), all timed in the same run on the same
random 32x32 batches after warm-up steps, interleaved (each round times every path once,
the best round is kept). Inference: images/s of ``Engine.logits`` at several eval batch
sizes under the auto precision. Writes
benchmarks/results/<STEM>.{md,json} (default ``engine_cpu_<capability>``). Run it on an
otherwise idle machine. To see what an AVX2-only CPU does on an AVX-512 one, cap both
dispatchers: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/engine.py``.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from _common import header, meta, write
from advrbd_plugin.engine import Engine, TrainConfig
from advrbd_plugin.models import build_model
from advrbd_plugin.report import markdown_table

PATHS = {"fp32": ("fp32", False, False), "fp32_cl": ("fp32", True, False),
         "bf16": ("bf16", False, False), "bf16_cl": ("bf16", True, False),
         "auto": ("auto", "auto", False)}
COMPILED = {"fp32_compile": ("fp32", False, True), "bf16_compile": ("bf16", False, True)}
EVAL_BATCHES = (64, 128, 256, 1024)


def _data(eng: Engine, n: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    return eng.data(x, (0.5,) * 3, (0.25,) * 3), torch.randint(0, 10, (n,), generator=g)


class Path:
    """One training path, set up once: model, engine and data, warmed up."""

    def __init__(self, name: str, precision: str, channels_last, compile: bool, steps: int,
                 batch: int):
        torch.manual_seed(0)
        self.model = build_model(name, 10, input_size=32, in_channels=3)
        self.eng = Engine(device="cpu", precision=precision, channels_last=channels_last,
                          compile=compile, quiet=True)
        self.images = batch * (steps + 2)
        self.data, self.y = _data(self.eng, self.images)
        self.cfg = TrainConfig(epochs=1.0, lr=0.01, batch_size=batch)
        # two warm-up steps (they also absorb torch.compile's compilation)
        self.eng.fit(self.model, self.data, self.y, self.cfg.replace(epochs=2 / (steps + 2)))

    def img_s(self) -> float:
        """Images/s of one Engine.fit pass over ``steps + 2`` batches."""
        t0 = time.perf_counter()
        self.eng.fit(self.model, self.data, self.y, self.cfg)
        return self.images / (time.perf_counter() - t0)


def throughputs(name: str, paths: dict, steps: int, batch: int, repeats: int) -> dict:
    """Best images/s per path over ``repeats`` rounds; each round times every path once, in
    turn, so a slow drift of the machine (another tenant, clocks) hits all paths alike."""
    built = {k: Path(name, p, cl, comp, steps, batch) for k, (p, cl, comp) in paths.items()}
    best = {k: 0.0 for k in built}
    for _ in range(repeats):
        for k, path in built.items():
            best[k] = max(best[k], path.img_s())
    return best


def inference(name: str, eval_batch: int, n: int) -> float:
    """Images/s of Engine.logits (auto precision) over ``n`` images, after one warm-up pass."""
    torch.manual_seed(0)
    model = build_model(name, 10, input_size=32, in_channels=3)
    eng = Engine(device="cpu", quiet=True, eval_batch=eval_batch)
    data, _ = _data(eng, n)
    eng.logits(model, data)
    t0 = time.perf_counter()
    eng.logits(model, data)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet9", "resnet18"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of timed runs, every path once per round (best kept)")
    ap.add_argument("--eval-images", type=int, default=2048)
    ap.add_argument("--threads", type=int, help="torch intra-op threads")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile paths")
    ap.add_argument("--paths", nargs="+", choices=[*PATHS, *COMPILED],
                    help="time only these paths (fp32 and auto always run)")
    ap.add_argument("--name", help="results file stem (default engine_cpu_<capability>)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    paths = {**PATHS, **COMPILED} if a.compile else PATHS
    if a.paths:
        paths = {k: v for k, v in paths.items() if k in a.paths or k in ("fp32", "auto")}
    auto = Engine(device="cpu", quiet=True)
    picked = {"precision": auto.precision, "reason": auto.precision_reason,
              "channels_last": auto.channels_last, "eval_batch": auto.eval_batch}
    rows = []
    for name in a.models:
        row = {"model": name}
        for k, v in throughputs(name, paths, a.steps, a.batch, a.repeats).items():
            row[f"{k}_img_s"] = round(v, 1)
            print(name, k, row[f"{k}_img_s"], flush=True)
        explicit = [k for k in paths if k != "auto"]
        best = max(explicit, key=lambda k: row[f"{k}_img_s"])
        row.update({"best": best, "auto_vs_best": round(row["auto_img_s"] / row[f"{best}_img_s"], 3)})
        for b in EVAL_BATCHES:
            row[f"eval{b}_img_s"] = round(inference(name, b, a.eval_images), 1)
            print(name, f"eval batch {b}", row[f"eval{b}_img_s"], flush=True)
        row["best_eval_batch"] = max(EVAL_BATCHES, key=lambda b: row[f"eval{b}_img_s"])
        rows.append(row)
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    info = meta("engine.py", steps=a.steps, batch=a.batch, auto=picked, env_caps=caps)
    names = {"fp32": "fp32", "fp32_cl": "fp32 + channels_last", "bf16": "bf16",
             "bf16_cl": "bf16 + channels_last", "auto": "**auto**",
             "fp32_compile": "fp32 + compile", "bf16_compile": "bf16 + compile"}
    train = [[r["model"], names[k], r[f"{k}_img_s"], f"{r[f'{k}_img_s'] / r['fp32_img_s']:.2f}x"]
             for r in rows for k in paths]
    summary = [[r["model"], names[r["best"]], r[f"{r['best']}_img_s"], r["auto_img_s"],
                f"{r['auto_vs_best']:.2f}", r["best_eval_batch"],
                r[f"eval{picked['eval_batch']}_img_s"] if picked["eval_batch"] in EVAL_BATCHES else "-"]
               for r in rows]
    evals = [[r["model"], *(r[f"eval{b}_img_s"] for b in EVAL_BATCHES)] for r in rows]
    md = header("Engine throughput (CPU) and the auto choices", info) + [
        (f"Dispatch capped by the environment: {', '.join(f'{k}={v}' for k, v in caps.items())} "
         "(an AVX2-only CPU emulated on this one).\n") if caps else "",
        f"`auto` resolved here to **{picked['precision']}** ({picked['reason']}), channels_last "
        f"{picked['channels_last']}, eval batch {picked['eval_batch']}.", "",
        "## auto against the best explicit path", "",
        markdown_table(["model", "best explicit path", "its img/s", "auto img/s", "auto / best",
                        "best eval batch", f"img/s at auto's eval batch ({picked['eval_batch']})"],
                       summary), "",
        f"## Training img/s (`Engine.fit`, SGD, on-device crop+flip, batch {a.batch}, 32x32x3)", "",
        markdown_table(["model", "path", "img/s", "vs fp32"], train), "",
        f"## Inference img/s (`Engine.logits`, auto precision, {a.eval_images} images) by eval batch", "",
        markdown_table(["model", *(str(b) for b in EVAL_BATCHES)], evals)]
    tag = str(torch.backends.cpu.get_cpu_capability()).lower().replace(" ", "")
    write(a.name or f"engine_cpu_{tag}", "\n".join(md) + "\n", info, rows)


if __name__ == "__main__":
    main()

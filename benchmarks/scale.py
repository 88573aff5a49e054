"""Scale-out on this machine: the compare grid local vs Ray, and one training under DDP.

Usage: python benchmarks/scale.py [--dataset digits] [--attacks badnet blend]
           [--defenses none advrbd ac] [--workers 2] [--set KEY=VALUE ...] [--ddp-model resnet20]
           [--ddp-epochs 2]
1. The grid (none first) runs with ``--backend local`` (one process, one thread per cell)
   and with ``--backend ray`` on a local Ray instance of ``--workers`` CPUs, each in a fresh
   folder; wall times and whether the two tables are identical.
2. One ``Engine.fit`` on the dataset's training images under 1 and 2 gloo processes
   (spawned here, one thread each, same global batch): images/s and the largest weight
   difference between the two (BatchNorm statistics are per rank under DDP).
Writes benchmarks/results/scale_cpu.{md,json}.
"""
from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from _common import header, meta, write
from advrbd_plugin.compare import compare
from advrbd_plugin.report import markdown_table

KEYS = ("attack", "defense", "acc", "asr", "ra", "tpr", "fpr", "precision")


def _grid(a, backend: str, out: str) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    rows = compare(a.dataset, a.attacks, a.defenses, [0], sets=a.sets, out=out, quiet=True,
                   precision="fp32", backend=backend, num_cpus=1)
    return time.perf_counter() - t0, [{k: r.get(k) for k in KEYS} for r in rows]


def _fit(out: str, model_name: str, dataset: str, epochs: float) -> None:
    from advrbd_plugin.data import load_dataset
    from advrbd_plugin.engine import Engine, TrainConfig
    from advrbd_plugin.models import build_model

    torch.set_num_threads(1)
    ds = load_dataset(dataset).train_set()
    eng = Engine(device="cpu", precision="fp32", quiet=True, seed=0)
    torch.manual_seed(0)
    model = build_model(model_name, ds.num_classes, input_size=ds.input_size[0], in_channels=ds.channels)
    data = eng.data(ds)
    t0 = time.perf_counter()
    hist = eng.fit(model, data, ds.labels, TrainConfig(epochs=epochs, lr=0.05, batch_size=128))
    seconds = time.perf_counter() - t0
    steps = len(ds) // 128 * epochs
    torch.save({"img_s": steps * 128 / seconds, "state": model.state_dict(), "loss": hist[-1]["loss"]}, out)


def _rank(rank: int, port: int, folder: str, model_name: str, dataset: str, epochs: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    _fit(os.path.join(folder, f"ddp{rank}.pt"), model_name, dataset, epochs)
    torch.distributed.destroy_process_group()


#: Wall time of one standard ResNet-18 CIFAR-10 training on one A100, as quoted in
#: ../shared/reference/anchors.md section 3 (not measured by this project).
A100_RESNET18_MIN = 7.0
#: Training cost of each dataset relative to CIFAR-10 (images x pixels, same epochs).
DATASET_COST = {"cifar10": 1.0, "cifar100": 1.0, "gtsrb": 39_209 / 50_000, "tiny-imagenet": 100_000 * 4 / 50_000}


def cluster_estimate(gpus: int = 32, seeds: int = 3, attacks: int = 8) -> dict:
    """The paper preset's grid on ``gpus`` GPUs, from the measured time ratios of
    results/compare_cpu.json (cost of each defense in plain trainings)."""
    import json

    rows = json.loads((Path(__file__).parent / "results" / "compare_cpu.json").read_text())["rows"]
    ratio: dict[str, list[float]] = {}
    for r in rows:
        if r["attack"] != "Average" and r.get("time_ratio") is not None:
            ratio.setdefault(r["defense"], []).append(r["time_ratio"])
    per_group = sum(sum(v) / len(v) for v in ratio.values())  # trainings per (dataset, attack, seed)
    trainings = per_group * seeds * attacks * sum(DATASET_COST.values())
    gpu_hours = trainings * A100_RESNET18_MIN / 60
    cells = len(ratio) * seeds * attacks * len(DATASET_COST)
    return {"defenses": len(ratio), "cells": cells, "trainings_per_group": round(per_group, 2),
            "resnet18_trainings": round(trainings), "gpu_hours": round(gpu_hours),
            "wall_hours_on_gpus": round(gpu_hours / gpus, 1), "gpus": gpus,
            "one_gpu_days": round(gpu_hours / 24, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--attacks", nargs="+", default=["badnet", "blend"])
    ap.add_argument("--defenses", nargs="+", default=["none", "advrbd", "ac"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--ddp-model", default="resnet20")
    ap.add_argument("--ddp-epochs", type=float, default=2)
    a = ap.parse_args()
    import ray

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        local_s, local = _grid(a, "local", f"{tmp}/local")
        ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        ray.get(ray.remote(lambda: 0).remote())  # cluster start-up, reported apart
        startup = time.perf_counter() - t0
        ray_s, on_ray = _grid(a, "ray", f"{tmp}/ray")
        ray.shutdown()
        _fit(f"{tmp}/single.pt", a.ddp_model, a.dataset, a.ddp_epochs)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_rank, args=(port, tmp, a.ddp_model, a.dataset, a.ddp_epochs), nprocs=2, join=True)
        single = torch.load(f"{tmp}/single.pt", weights_only=False)
        ddp = [torch.load(f"{tmp}/ddp{r}.pt", weights_only=False) for r in range(2)]
    diff = max(float((ddp[0]["state"][k].float() - v.float()).abs().max())
               for k, v in single["state"].items() if v.is_floating_point())
    same_ranks = all(torch.equal(ddp[0]["state"][k], ddp[1]["state"][k]) for k in single["state"])
    cells = len(a.attacks) * len({"none", *a.defenses})
    result = {"cells": cells, "local_s": round(local_s, 1), "ray_s": round(ray_s, 1),
              "ray_startup_s": round(startup, 1), "tables_identical": local == on_ray,
              "fit_img_s_1proc": round(single["img_s"], 1),
              "fit_img_s_2proc": round(min(d["img_s"] for d in ddp), 1),
              "max_weight_diff": diff, "ranks_identical": same_ranks,
              "final_loss_1proc": single["loss"], "final_loss_2proc": ddp[0]["loss"]}
    info = meta("scale.py", dataset=a.dataset, attacks=a.attacks, defenses=a.defenses,
                workers=a.workers, sets=a.sets, ddp_model=a.ddp_model, ddp_epochs=a.ddp_epochs)
    md = header("Scale-out on this machine: local vs Ray, DDP 1 vs 2 processes", info) + [
        f"## The grid ({a.dataset}, {cells} cells, fp32, one thread per cell)", "",
        markdown_table(["backend", "wall s", "tables identical to local"],
                       [["local (one process)", result["local_s"], "-"],
                        [f"ray ({a.workers} workers; start-up {result['ray_startup_s']} s apart)",
                         result["ray_s"], result["tables_identical"]]]), "",
        f"## One training under DDP ({a.ddp_model}, {a.ddp_epochs} epochs, global batch 128, gloo)", "",
        markdown_table(["processes", "img/s", "final loss"],
                       [[1, result["fit_img_s_1proc"], f"{result['final_loss_1proc']:.4f}"],
                        [2, result["fit_img_s_2proc"], f"{result['final_loss_2proc']:.4f}"]]), "",
        f"Largest weight difference, 2 processes vs 1: {diff:.3g} (BatchNorm normalizes each "
        f"rank's half batch by its own statistics); the two ranks' weights identical: {same_ranks}."]
    est = cluster_estimate()
    info["cluster_estimate"] = est
    md += ["", "## On paper: the paper preset's grid on a 4 x 8-GPU cluster", "",
           f"{est['defenses']} defenses (none included) x {8} attacks x 3 seeds x 4 datasets = "
           f"**{est['cells']} cells**. The cost of each defense in plain trainings is its mean "
           f"`time_ratio` in `compare_cpu.json` (measured on the cpu preset: none 1, post-training "
           f"defenses 0-0.22, training-time ones 0.83-2.02), **{est['trainings_per_group']} "
           f"trainings per (dataset, attack, seed)**; datasets weighted by images x pixels against "
           f"CIFAR-10 (CIFAR-100 1, GTSRB 0.78, Tiny-ImageNet 8). That is "
           f"**{est['resnet18_trainings']} CIFAR-10-equivalent ResNet-18 trainings of 100 epochs**. "
           f"At {A100_RESNET18_MIN:g} min per training on one A100 (quoted in "
           f"`../shared/reference/anchors.md`, not measured here: no GPU was lent to this run), "
           f"**{est['gpu_hours']} GPU-hours: {est['one_gpu_days']} days on one GPU, about "
           f"{est['wall_hours_on_gpus']} h on {est['gpus']} GPUs** with one cell per GPU "
           f"(`--backend ray --num-gpus 1`), plus the tail of the longest cells (an AdvrBD or AC "
           f"cell, ~2 trainings: ~15 min on CIFAR-10, ~2 h on Tiny-ImageNet) and each post-training "
           f"cell's wait for its `none` cell. DDP inside a cell (torchrun) shortens that tail but "
           f"not the total, which one cell per GPU already keeps busy."]
    write("scale_cpu", "\n".join(md) + "\n", info, [result])


if __name__ == "__main__":
    main()

"""The compare grid on Ray: each (dataset, attack, defense, seed) cell is one Ray task.

Optional (``pip install -e ".[ray]"``); imported only by ``compare(..., backend="ray")``.
A task runs ``runner.run`` for its cell, exactly as the local backend does, and writes the
cell's run folder under ``out``, which every node must reach (a shared path). Finished cells
(same config hash) are not submitted, so a killed grid resumes with the missing cells
only. A post-training defense's cell waits for its (attack, seed) ``none`` cell, which
trains the backdoored model it repairs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from . import runner
from .registry import DEFENSES

__all__ = ["run_cells"]


def _run_cell(cwd: str, config: Any, kw: Mapping[str, Any], *after: Any) -> dict:
    """One cell, on a Ray worker (``after``: the cells it waits for, already finished)."""
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths (config, npz) mean what they meant to the driver
    return runner.run(config, **kw)


def run_cells(config: Any, cells: Sequence[Mapping[str, Any]], *, address: Optional[str] = None,
              num_cpus: float = 1, num_gpus: Optional[float] = None) -> list[dict]:
    """Metrics of every cell (same order as ``cells``, each a ``runner.run`` keyword dict).

    address: a running Ray cluster ('auto', 'ray://host:10001'); None starts a local one.
    num_cpus / num_gpus: each task's resource request (num_gpus default: 1 when the cells
    run on CUDA, else 0).
    """
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    if num_gpus is None:
        device = runner.resolve_config(config, cells[0].get("sets"), **{
            k: v for k, v in cells[0].items() if k != "sets"})["device"] if cells else "cpu"
        num_gpus = 1 if str(device).startswith("cuda") or (
            device == "auto" and _cuda_available()) else 0
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_run_cell)
    cwd = os.getcwd()
    results: list[Any] = [None] * len(cells)
    none_refs: dict[tuple, Any] = {}
    for i, kw in enumerate(cells):  # the none cells come first in each (attack, seed) group
        done = runner.finished(config, **kw)
        if done is not None:
            results[i] = done
            continue
        key = (kw.get("attack"), kw.get("seed"))
        after = [none_refs[key]] if key in none_refs and DEFENSES.get(
            kw["defense"]).needs_trained_model else []
        results[i] = task.remote(cwd, config, dict(kw), *after)
        if kw["defense"] == "none":
            none_refs[key] = results[i]
    pending = [i for i, r in enumerate(results) if not isinstance(r, dict)]
    for i, m in zip(pending, ray.get([results[i] for i in pending])):
        results[i] = m
    return results


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()

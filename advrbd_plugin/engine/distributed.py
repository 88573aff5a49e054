"""Data parallelism for the engine under ``torchrun``: ranks, batch shards, ordered gathers.

Launched as ``torchrun --nproc_per_node N -m advrbd_plugin run ...``, every process runs the
same code with the same seeds. The engine then

* trains with DistributedDataParallel: every rank draws the same global batch (same data
  order, same augmentation draws) and computes its contiguous share of it; gradients are
  averaged, so a step is one step on the global batch (BatchNorm statistics are per rank,
  as in any DDP training);
* runs the per-sample passes (logits, features, masked KL) round-robin over the same
  batches one process would use, and sums the filled rows across ranks: every rank ends
  with all N rows in sample order, each computed on exactly the batch one process uses.

Only rank 0 writes files and shows progress. No defense knows about ranks.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "rank", "world_size", "is_main", "local_share", "all_sum",
           "all_max", "sync_buffers", "barrier"]


def init_from_env(device_type: str) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); nccl on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in a single process and on rank 0."""
    return rank() == 0


def local_share(n: int) -> slice:
    """This rank's contiguous share of a global batch of ``n`` (sizes differ by at most 1)."""
    r, w = rank(), world_size()
    return slice(n * r // w, n * (r + 1) // w)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum across ranks (identity in a single process); returns ``t``."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_max(t: torch.Tensor) -> torch.Tensor:
    """In-place elementwise max across ranks (identity in a single process); returns ``t``."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank: after DDP
    training each rank's last forward left its own, and the per-sample passes that follow
    must all use one model."""
    if world_size() > 1:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()

"""Batched masked adversarial perturbation and the per-sample KL it causes."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .core import Engine
from .data import DeviceData

__all__ = ["random_square_masks", "masked_kl_scores"]


def random_square_masks(n: int, h: int, w: int, radius: int,
                        generator: torch.Generator) -> torch.Tensor:
    """(n, 1, h, w) float masks, each a square of side 2r+1 at a uniform random centre, clipped."""
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    rows = ((ys - cy[:, None]).abs() <= radius).float()  # (n, h)
    cols = ((xs - cx[:, None]).abs() <= radius).float()  # (n, w)
    return (rows[:, :, None] * cols[:, None, :])[:, None]


def masked_kl_scores(engine: Engine, model: nn.Module, data: DeviceData, *, eps: float,
                     radius: int, steps: int, step_size: float | None = None, repeats: int = 1,
                     batch_size: Optional[int] = None, fast_steps: bool = True,
                     desc: str = "score") -> torch.Tensor:
    """KL(p(x) || p(x + m*delta*)) per sample, maximised over |delta|_inf <= eps by PGD.

    eps, step_size: in [0, 1] pixel units (step_size defaults to 2.5 * eps / steps). radius: patch half-size in pixels. repeats: fresh masks per
    sample, scores averaged. The reference and the final KL run in float32 (poisoned
    samples' KL sits near 1e-5, below bfloat16 noise); with ``fast_steps`` the PGD steps,
    which only need the gradient's sign, run under the engine's autocast.
    Returns (N,) float32 on the CPU; low = robust (suspicious).
    """
    step_size = 2.5 * eps / steps if step_size is None else step_size
    gen = engine.generator()
    was = model.training
    model = engine.prepare(model).eval()
    grad_state = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    n = len(data)
    _, c, h, w = data.shape
    world, rank = distributed.world_size(), distributed.rank()
    rows = []
    try:
        for k, idx in enumerate(engine.progress(list(engine.batches(data, batch_size)), desc=desc)):
            b = len(idx)
            if k % world != rank:  # another rank's batch: draw its masks and starts, skip it
                for _ in range(repeats):
                    random_square_masks(b, h, w, radius, gen)
                    torch.rand((b, c, h, w), generator=gen)
                continue
            x = data.raw(idx)
            with torch.no_grad():
                logp_clean = F.log_softmax(model(engine._fmt(data.normalize(x))).float(), 1)
            p_clean = logp_clean.exp()
            total = torch.zeros(b, device=x.device)
            for _ in range(repeats):
                m = random_square_masks(b, h, w, radius, gen).to(x.device)
                delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x.device) * m
                for _ in range(steps):
                    delta.requires_grad_(True)
                    with engine.autocast(fast_steps):
                        kl = _kl(model, engine, data, x, delta, m, p_clean, logp_clean)
                    (g,) = torch.autograd.grad(kl.sum(), delta)
                    delta = (delta.detach() + step_size * g.sign() * m).clamp(-eps, eps)
                with torch.no_grad():
                    total += _kl(model, engine, data, x, delta, m, p_clean, logp_clean)
            rows.append((idx, (total / repeats).clamp(min=0)))  # rounding can dip below 0
    finally:
        for p, g in zip(model.parameters(), grad_state):
            p.requires_grad_(g)
        model.train(was)
    return engine.gather_rows(rows, n)


def _kl(model, engine, data, x, delta, m, p_clean, logp_clean) -> torch.Tensor:
    x_adv = (x + m * delta).clamp(0, 1)
    logp_adv = F.log_softmax(model(engine._fmt(data.normalize(x_adv))).float(), 1)
    return (p_clean * (logp_clean - logp_adv)).sum(1)

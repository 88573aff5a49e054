"""The one engine: every defense trains, unlearns, predicts and scores through it."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..types import PoisonedDataset
from . import distributed
from .data import DeviceData
from .precision import PRECISIONS, resolve_precision

__all__ = ["Engine", "TrainConfig", "TrainingDiverged", "resolve_device"]

_SCHEDULES = ("onecycle", "cosine", "constant")


class TrainingDiverged(RuntimeError):
    """A training loss turned non-finite: the model is unusable and nothing downstream runs."""


#: Steps between checks of the training loss for non-finite values (one host sync each).
_CHECK_EVERY = 25


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else is passed to torch.device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


@dataclass
class TrainConfig:
    """One training (or fine-tuning, or unlearning) run.

    epochs: passes over the learned samples (fractions allowed, e.g. 0.5).
    lr: peak learning rate; schedule: onecycle (linear up for ``warmup`` of the run,
    then linearly down to 0), cosine (linear up for ``warmup`` of the run, then cosine
    down to 0), or constant.
    """

    epochs: float = 10
    lr: float = 0.1
    batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup: float = 0.2
    augment: bool = True
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name, kind in (("epochs", (int, float)), ("lr", (int, float)), ("batch_size", int),
                           ("momentum", (int, float)), ("weight_decay", (int, float)),
                           ("warmup", (int, float)), ("label_smoothing", (int, float))):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                hint = f"; set a number, e.g. train.{name}={getattr(TrainConfig, name)!r}"
                try:
                    float(value)
                    hint = "; in YAML write a number with a dot, e.g. 1.0e-3, not 1e-3"
                except (TypeError, ValueError):
                    pass
                raise ValueError(f"train.{name}: expected a number, found {value!r} "
                                 f"({type(value).__name__}){hint}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule: expected one of {_SCHEDULES}, found {self.schedule!r}")
        if not self.epochs > 0 or not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: expected epochs > 0, lr > 0, batch_size >= 1; found "
                             f"epochs={self.epochs}, lr={self.lr}, batch_size={self.batch_size}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup: expected a fraction in [0, 1), found {self.warmup}")

    def replace(self, **kw) -> "TrainConfig":
        return TrainConfig(**{**asdict(self), **kw})


class Engine:
    """Trains and evaluates models on device-resident tensors.

    device: 'auto' | 'cpu' | 'cuda[:i]'.
    precision: 'auto' (the device's fastest, see ``engine/precision.py``: bf16 on CUDA and on
        CPUs with native bf16 kernels, fp32 on CPUs without them), 'bf16' (autocast
        bfloat16, CPU and CUDA), 'fp16' (CUDA autocast + GradScaler) or 'fp32'. Scoring that
        needs exact small differences asks for fp32 explicitly. ``precision`` holds the
        resolved choice, ``precision_reason`` why.
    channels_last: memory format for conv models: True, False or 'auto' (on CUDA only: on the
        CPUs we measured it was 0-11% slower than the default layout, benchmarks/engine.py).
    compile: wrap models with torch.compile for training.
    seed: seeds data order and augmentation of every call (each call draws from a
        generator seeded by (seed, call counter), so runs are reproducible).
    max_device_bytes: above this the images stream from pinned host memory (CUDA only).
    eval_batch: batch size of inference passes (logits, losses, features, scoring); default
        1024 on CUDA and 64 on CPU, where small batches stay in cache (benchmarks/engine.py,
        2 threads: resnet20 64 -> 3037 img/s, 128 -> 2667, 1024 -> 1619 under bf16 on an
        AVX512-BF16 EPYC; 1506 / 1156 / 507 under fp32 with AVX2 dispatch).
    """

    def __init__(self, device: str | torch.device = "auto", precision: str = "auto",
                 channels_last: bool | str = "auto", compile: bool = False, quiet: bool = False,
                 seed: int = 0, max_device_bytes: Optional[int] = None,
                 eval_batch: Optional[int] = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")
        self.device = resolve_device(device)
        distributed.init_from_env(self.device.type)
        if self.device.type == "cuda" and self.device.index is None and distributed.world_size() > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision 'fp16' needs CUDA; use 'auto', 'bf16' or 'fp32' on CPU")
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last: expected true, false or 'auto', found {channels_last!r}")
        self.precision, self.precision_reason = resolve_precision(precision, self.device)
        self.channels_last = self.device.type == "cuda" if channels_last == "auto" else channels_last
        self.compile = compile
        self.quiet = quiet or not distributed.is_main()  # one progress display, rank 0's
        self.seed = int(seed)
        self.max_device_bytes = max_device_bytes
        if eval_batch is not None and eval_batch < 1:
            raise ValueError(f"eval_batch: expected a positive batch size, found {eval_batch}")
        self.eval_batch = eval_batch or (1024 if self.device.type == "cuda" else 64)
        self._calls = 0

    def describe(self) -> dict:
        """What this engine runs with (for metrics.json and the start-of-run line)."""
        return {"device": str(self.device), "precision": self.precision,
                "precision_reason": self.precision_reason, "channels_last": self.channels_last,
                "compile": self.compile, "eval_batch": self.eval_batch,
                "threads": torch.get_num_threads(), "world_size": distributed.world_size(),
                "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}

    def announce(self) -> None:
        """Print the resolved device and precision once (unless quiet)."""
        if not self.quiet:
            print(f"advrbd: {self.device}, {self.precision} ({self.precision_reason}), "
                  f"{torch.get_num_threads()} threads", file=sys.stderr)

    # -- helpers --------------------------------------------------------------
    def generator(self) -> torch.Generator:
        """A fresh CPU generator; successive calls give successive, reproducible streams."""
        self._calls += 1
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls)

    def autocast(self, enabled: bool = True):
        if not enabled or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def data(self, images, mean=None, std=None) -> DeviceData:
        """Put images on the device once. ``images`` may be a PoisonedDataset or a tensor."""
        if isinstance(images, DeviceData):
            return images
        if isinstance(images, PoisonedDataset):
            mean, std, images = images.mean, images.std, images.images
        if mean is None or std is None:
            raise ValueError("Engine.data: mean and std are required for raw image tensors")
        nbytes = images.numel() * images.element_size()
        stream = self.max_device_bytes is not None and nbytes > self.max_device_bytes
        return DeviceData(images, mean, std, self.device, stream=stream)

    def prepare(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def progress(self, it, **kw):
        return tqdm(it, disable=self.quiet, leave=False, dynamic_ncols=True, **kw)

    # -- training ---------------------------------------------------------------
    def fit(self, model: nn.Module, data, labels: torch.Tensor, cfg: TrainConfig, *,
            weights: Optional[torch.Tensor] = None, ascent_bound: Optional[float] = None,
            ascent_batch: Optional[int] = None, unlearn: str = "ascent", desc: str = "train",
            on_epoch: Optional[Callable[[int, nn.Module], Optional[dict]]] = None,
            mix: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Generator],
                                   tuple[torch.Tensor, torch.Tensor]]] = None,
            loss_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
            refresh: Optional[Callable[[int, nn.Module],
                                       Optional[tuple[torch.Tensor, torch.Tensor]]]] = None,
            ) -> list[dict]:
        """Train ``model`` in place with SGD; returns one record per epoch.

        labels: (N,) int64 targets (may differ from the dataset's, e.g. relabels).
        weights: optional (N,) per-sample loss weights. 0 drops a sample; a negative weight
            means gradient ascent (unlearning). When some weights are negative, each step
            holds ``batch_size`` learned samples plus ``ascent_batch`` (default batch_size)
            samples drawn from the unlearned set, and an epoch is one pass over the learned
            samples (or over the unlearned ones when nothing is learned).
        ascent_bound: ascent on a sample stops once its loss exceeds this bound
            (bounded unlearning); None = unbounded.
        unlearn: how negative-weight samples are unlearned: 'ascent' (gradient ascent on
            their cross-entropy, the ABL / D-BR form) or 'complement' (descent on
            -log(1 - p_y), which pushes p_y down with a strong gradient when the sample is
            confidently fit and fades once it is not: bounded by construction).
        on_epoch: called as on_epoch(epoch, model) after each epoch; a returned dict is
            merged into that epoch's record.
        mix: batch-level mixing (CutMix, MixUp): mix(x, y, generator) gets the normalized,
            augmented batch (B, C, H, W) and its labels (B,) and returns (x', targets) with
            targets (B, K) class probabilities; draw randomness from ``generator``.
        loss_transform: maps the per-sample loss (B,) to the per-sample loss optimized, before
            weights apply (e.g. ABL's local gradient ascent sign(l - gamma) * l).
        refresh: called as refresh(epoch, model) after each epoch (model in eval mode); a
            returned (labels, weights) pair replaces both from the next epoch on (e.g. samples
            joining with the model's own predictions as labels). The step count stays the
            one fixed at the start: ``cfg.epochs`` passes over the initial learned set.
        """
        if unlearn not in ("ascent", "complement"):
            raise ValueError(f"unlearn: expected 'ascent' or 'complement', found {unlearn!r}")
        data = self.data(data) if not isinstance(data, DeviceData) else data
        n = len(data)

        def index(labels, weights):
            """Device labels and weights, the epoch's main and side (unlearned) index sets,
            batch size, steps per epoch and side batch size."""
            if labels.shape != (n,):
                raise ValueError(f"fit: expected {n} labels, found shape {tuple(labels.shape)}")
            weights = torch.ones(n) if weights is None else weights.float().cpu()
            learn = torch.nonzero(weights > 0).flatten()
            forget = torch.nonzero(weights < 0).flatten()  # not ``unlearn``: that names the loss
            if len(learn) == 0 and len(forget) == 0:
                raise ValueError("fit: every sample has weight 0; nothing to train on")
            main = learn if len(learn) else forget
            bs = min(cfg.batch_size, len(main))
            side_bs = 0 if len(learn) == 0 or len(forget) == 0 else min(
                ascent_batch or cfg.batch_size, len(forget))
            return (labels.to(self.device).long(), weights.to(self.device), main, forget, bs,
                    max(1, len(main) // bs), side_bs)  # drop the last partial batch

        labels, w_dev, main, forget, bs, steps_per_epoch, side_bs = index(labels, weights)
        gen = self.generator()
        total = max(1, int(round(cfg.epochs * steps_per_epoch)))
        was_training = model.training
        model = self.prepare(model)
        world = distributed.world_size()
        net = model
        if world > 1:  # one step = one step on the global batch, each rank computing its share
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        net = torch.compile(net) if self.compile else net
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              nesterov=cfg.nesterov and cfg.momentum > 0,
                              weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, total))
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        model.train()
        history: list[dict] = []
        step, epoch, checked = 0, 0, 0
        step_loss = torch.zeros(total, device=self.device)  # checked for NaN every few steps
        lr_at = _schedule(cfg, total)
        bar = self.progress(range(total), desc=desc)
        t0 = time.perf_counter()
        while step < total:
            order = main[torch.randperm(len(main), generator=gen)]
            side = _cycle(forget, side_bs, gen) if side_bs else None
            stats = torch.zeros(3, device=self.device)  # loss sum, correct, seen (no sync per step)
            for i in range(steps_per_epoch):
                if step >= total:
                    break
                idx = order[i * bs:(i + 1) * bs]
                if side is not None:
                    idx = torch.cat([idx, next(side)])
                x = self._fmt(data.batch(idx, augment=cfg.augment, generator=gen))
                scale = 1.0
                if world > 1:  # same global batch and augmentation draws on every rank
                    share = distributed.local_share(len(idx))
                    scale = (share.stop - share.start) * world / len(idx)
                    x, idx = x[share], idx[share]
                idx_d = idx.to(self.device)
                y, w = labels[idx_d], w_dev[idx_d]
                x, target = mix(x, y, gen) if mix is not None else (x, y)
                with self.autocast():
                    out = net(x)
                ce = F.cross_entropy(out.float(), target, reduction="none",
                                     label_smoothing=cfg.label_smoothing)
                loss = _weighted_loss(loss_transform(ce) if loss_transform is not None else ce,
                                      w, ascent_bound, out.float(), y, unlearn) * scale
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                with torch.no_grad():
                    pos = (w > 0).float()
                    step_loss[step] = loss.detach()
                    stats += torch.stack([(ce.detach() * pos).sum(),
                                          ((out.argmax(1) == y).float() * pos).sum(), pos.sum()])
                step += 1
                bar.update(1)
                if step - checked >= _CHECK_EVERY:
                    checked = _check_finite(step_loss, checked, step, cfg, lr_at, desc)
            checked = _check_finite(step_loss, checked, step, cfg, lr_at, desc)
            loss_sum, correct, seen = distributed.all_sum(stats).tolist()
            record = {"epoch": epoch, "loss": loss_sum / max(seen, 1),
                      "train_acc": correct / max(seen, 1),
                      "seconds": round(time.perf_counter() - t0, 3)}
            if on_epoch is not None or refresh is not None:
                model.eval()
                extra = on_epoch(epoch, model) if on_epoch is not None else None
                fresh = refresh(epoch, model) if refresh is not None and step < total else None
                model.train()
                if extra:
                    record.update(extra)
                if fresh is not None:
                    labels, w_dev, main, forget, bs, steps_per_epoch, side_bs = index(*fresh)
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}")
            epoch += 1
        bar.close()
        distributed.sync_buffers(model)  # one model on every rank (BatchNorm statistics)
        model.train(was_training)
        return history

    # -- inference ----------------------------------------------------------------
    def batches(self, data: DeviceData, batch_size: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Index tensors of consecutive inference batches (default size: ``eval_batch``)."""
        n, batch_size = len(data), batch_size or self.eval_batch
        for s in range(0, n, batch_size):
            yield torch.arange(s, min(s + batch_size, n))

    def my_batches(self, data: DeviceData, batch_size: Optional[int] = None,
                   desc: str = "inference") -> Iterator[torch.Tensor]:
        """The inference batches this rank computes: every ``world_size``-th of ``batches``
        (all of them in a single process), with a progress bar named ``desc`` (silenced by
        ``quiet``)."""
        w, r = distributed.world_size(), distributed.rank()
        mine = [idx for b, idx in enumerate(self.batches(data, batch_size)) if b % w == r]
        yield from self.progress(mine, desc=desc)

    def gather_rows(self, rows: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> torch.Tensor:
        """(N, ...) float32 on the CPU from this rank's (index, (B, ...) values) pairs; under
        torchrun the ranks' rows are summed into place, so every rank gets all N in order."""
        if distributed.world_size() == 1:
            return torch.cat([v.cpu() for _, v in rows]) if rows else torch.zeros(0)
        width = torch.tensor([rows[0][1].shape[1] if rows and rows[0][1].dim() > 1 else 0,
                              1 if rows and rows[0][1].dim() > 1 else 0], device=self.device)
        width = distributed.all_max(width).tolist()  # a rank may have had no batch
        out = torch.zeros((n, width[0]) if width[1] else (n,), device=self.device)
        for idx, v in rows:
            out[idx.to(self.device)] = v.float()
        return distributed.all_sum(out).cpu()

    @torch.no_grad()
    def logits(self, model: nn.Module, data, batch_size: Optional[int] = None,
               fp32: bool = False, desc: str = "inference") -> torch.Tensor:
        """(N, K) float32 logits on the CPU, model in eval mode (its mode restored after);
        computed under autocast unless ``fp32``; ``desc`` names the progress bar."""
        data = self.data(data) if not isinstance(data, DeviceData) else data
        was = model.training
        model = self.prepare(model).eval()
        rows = []
        for idx in self.my_batches(data, batch_size, desc):
            with self.autocast(not fp32):
                rows.append((idx, model(self._fmt(data.batch(idx))).float()))
        model.train(was)
        return self.gather_rows(rows, len(data))

    def predict(self, model: nn.Module, data, batch_size: Optional[int] = None,
                desc: str = "predict") -> torch.Tensor:
        """(N,) int64 predicted classes."""
        return self.logits(model, data, batch_size, desc=desc).argmax(1)

    def accuracy(self, model: nn.Module, data, labels: torch.Tensor) -> float:
        """Fraction of samples predicted as ``labels``; nan for an empty set."""
        if len(labels) == 0:
            return float("nan")
        return float((self.predict(model, data) == labels.cpu()).float().mean())

    def per_sample_loss(self, model: nn.Module, data, labels: torch.Tensor,
                        batch_size: Optional[int] = None, fp32: bool = True) -> torch.Tensor:
        """(N,) float32 cross-entropy per sample (logits in fp32 unless ``fp32=False``: enough
        for ranking by loss, ~1.7x faster on CPU)."""
        lg = self.logits(model, data, batch_size, fp32=fp32)
        return F.cross_entropy(lg, labels.cpu().long(), reduction="none")

    @torch.no_grad()
    def features(self, model: nn.Module, data, batch_size: Optional[int] = None,
                 with_logits: bool = False, desc: str = "features"):
        """(N, D) float32 penultimate features via ``model.forward_features``; with
        ``with_logits``, also the (N, K) logits from the same pass (``model.get_classifier()``
        on those features), as a pair; ``desc`` names the progress bar."""
        if not hasattr(model, "forward_features"):
            raise TypeError(f"{type(model).__name__} has no forward_features(x); models from "
                            "advrbd_plugin.models have it, wrap others to expose it")
        data = self.data(data) if not isinstance(data, DeviceData) else data
        was = model.training
        model = self.prepare(model).eval()
        if with_logits and not hasattr(model, "get_classifier"):
            raise TypeError(f"{type(model).__name__} has no get_classifier() for with_logits=True; "
                            "models from advrbd_plugin.models have it, or call logits() apart")
        head = model.get_classifier() if with_logits else None
        rows, heads = [], []
        for idx in self.my_batches(data, batch_size, desc):
            with self.autocast():
                f = model.forward_features(self._fmt(data.batch(idx)))
                rows.append((idx, f.float()))
                if head is not None:
                    heads.append((idx, head(f).float()))
        model.train(was)
        feats = self.gather_rows(rows, len(data))
        return (feats, self.gather_rows(heads, len(data))) if with_logits else feats


def _weighted_loss(ce: torch.Tensor, w: torch.Tensor, bound: Optional[float],
                   logits: torch.Tensor, y: torch.Tensor, unlearn: str) -> torch.Tensor:
    """Batch loss: w*ce for learned samples; for unlearned ones (w < 0) either -|w|*ce
    (ascent; stops once ce exceeds ``bound``) or |w| * -log(1 - p_y) ('complement')."""
    neg = w < 0
    if not bool(neg.any()):
        return (w * ce).sum() / ce.numel()
    if unlearn == "complement":
        others = logits.scatter(1, y[:, None], float("-inf"))
        comp = torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)  # -log(1 - p_y) >= 0
        per = torch.where(neg, -w * comp, w * ce)
    elif unlearn == "ascent":
        if bound is not None:
            ce = torch.where(neg & (ce > bound), ce.detach(), ce)
        per = w * ce
    else:
        raise ValueError(f"unlearn: expected 'ascent' or 'complement', found {unlearn!r}")
    return per.sum() / ce.numel()


def _check_finite(step_loss: torch.Tensor, start: int, stop: int, cfg: TrainConfig,
                  lr_at: Callable[[int], float], desc: str) -> int:
    """Raise TrainingDiverged naming the first step in [start, stop) whose loss is not
    finite; returns ``stop`` (the next unchecked step)."""
    chunk = distributed.all_sum(step_loss[start:stop].clone())  # a NaN on any rank stops all
    bad = torch.nonzero(~torch.isfinite(chunk)).flatten()
    if len(bad):
        s = start + int(bad[0])
        raise TrainingDiverged(
            f"training stage {desc!r} diverged: the loss became {float(chunk[s - start]):g} at step "
            f"{s + 1} of {len(step_loss)} (learning rate {cfg.lr * lr_at(s):.4g}, peak {cfg.lr:g}, "
            f"schedule {cfg.schedule}, warmup {cfg.warmup:g}); nothing was written from it. Lower "
            f"the learning rate or raise the warmup (advrbd: --set train.lr=... / "
            f"--set train.warmup=0.1; the BackdoorBench entry point: --lr ...)")
    return stop


def _cycle(index: torch.Tensor, size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``size`` drawn from ``index`` in reshuffled passes."""
    while True:
        perm = index[torch.randperm(len(index), generator=gen)]
        for s in range(0, len(perm) - size + 1, size):
            yield perm[s:s + size]


def _schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    if cfg.schedule == "constant":
        return lambda s: 1.0
    up = max(1, int(cfg.warmup * total))
    if cfg.schedule == "cosine":
        if cfg.warmup == 0:
            return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        return lambda s: (s + 1) / up if s < up else \
            0.5 * (1 + math.cos(math.pi * min(s - up, total - up) / max(1, total - up)))

    def onecycle(s: int) -> float:
        if s < up:
            return (s + 1) / up
        return max(0.0, (total - s) / max(1, total - up))

    return onecycle

"""The Defense interface every defense implements, and small shared helpers."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn as nn

from ..config import atomic_output, build_config
from ..engine import Engine, TrainConfig, distributed
from ..registry import DEFENSES
from ..types import DefenseResult, PoisonedDataset

__all__ = ["Defense", "DefenseConfig", "NoDefense", "reinitialize", "Monitor"]

#: A callable the runner may pass: monitor(model) -> {"acc": ..., "asr": ...} for histories.
Monitor = Callable[[nn.Module], dict]


@dataclass
class DefenseConfig:
    """Base config; each defense subclasses it with its own knobs."""


class Defense:
    """A backdoor defense: ``apply(poisoned_set, model) -> DefenseResult``.

    Class attributes a subclass sets:
      Config: its dataclass of knobs (defaults = the packaged YAML).
      requires_clean_data: True when ``clean_set`` (reserved clean samples) is needed.
      needs_trained_model: True for post-training defenses (they repair the given,
        already-trained model); False when the defense trains from the given model's
        architecture and initial weights.

    train: the plain-training recipe of this dataset (epochs, lr, batch size); defenses
      express their budgets relative to it, so one set of knobs fits every data size.
    checkpoint_dir: when set, ``stage`` saves each finished stage there and a re-run
      resumes from the last finished one.
    """

    Config = DefenseConfig
    requires_clean_data = False
    needs_trained_model = False
    registry_name = "defense"

    def __init__(self, config: Optional[Mapping[str, Any] | DefenseConfig] = None, *,
                 engine: Optional[Engine] = None, train: Optional[TrainConfig] = None,
                 checkpoint_dir: Optional[str | os.PathLike] = None, **overrides):
        if isinstance(config, self.Config):
            cfg = dataclasses.replace(config, **overrides) if overrides else config
        else:
            cfg = build_config(self.Config, {**dict(config or {}), **overrides},
                               what=f"{self.registry_name} config")
        self.config = cfg
        self.validate()
        self.engine = engine or Engine(quiet=True)
        self.train = train or TrainConfig()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None

    def validate(self) -> None:
        """Raise ValueError on bad knob values (override in subclasses)."""

    # -- the interface ------------------------------------------------------------
    def apply(self, poisoned_set: PoisonedDataset, model: nn.Module, *,
              clean_set: Optional[PoisonedDataset] = None,
              monitor: Optional[Monitor] = None) -> DefenseResult:
        """Defend: returns the cleaned model (eval mode) and what the defense found.

        The defense never sees the ground truth (it is stripped here) and never
        modifies ``poisoned_set`` or ``model`` (it works on a copy).
        """
        if not isinstance(poisoned_set, PoisonedDataset):
            raise TypeError(f"{self.registry_name}.apply: expected a PoisonedDataset, found "
                            f"{type(poisoned_set).__name__}")
        if self.requires_clean_data and clean_set is None:
            raise ValueError(f"defense {self.registry_name!r} requires reserved clean data: pass "
                             "clean_set= (the runner reserves it with clean_fraction)")
        data = poisoned_set.without_truth()
        clean = clean_set.without_truth() if clean_set is not None else None
        was_training = model.training
        work = copy.deepcopy(model)
        self._timings: dict[str, float] = {}
        result = self.run(data, work, clean_set=clean, monitor=monitor)
        model.train(was_training)
        result.model.eval()
        result.timings = {**self._timings, **result.timings}
        return result

    def run(self, data: PoisonedDataset, model: nn.Module, *,
            clean_set: Optional[PoisonedDataset], monitor: Optional[Monitor]) -> DefenseResult:
        raise NotImplementedError

    # -- helpers for subclasses --------------------------------------------------------
    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self._timings[name] = self._timings.get(name, 0.0) + time.perf_counter() - t0
        return out

    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        """Run stage ``name`` (timed) or, when its checkpoint exists, load it instead.

        fn returns a dict of tensors, state dicts and plain values. The checkpoint
        also stores the engine's RNG position, so a resumed run equals an uninterrupted one.
        """
        path = self.checkpoint_dir / f"stage_{name}.pt" if self.checkpoint_dir else None
        if path is not None and path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            self.engine._calls = int(saved["_engine_calls"])
            self._timings[name] = float(saved["_seconds"])
            return saved["out"]
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        self._timings[name] = seconds
        if path is not None and distributed.is_main():  # under torchrun rank 0 writes
            with atomic_output(path) as tmp:
                torch.save({"out": out, "_engine_calls": self.engine._calls, "_seconds": seconds}, tmp)
        return out

    def describe(self) -> dict:
        return {"name": self.registry_name, "config": dataclasses.asdict(self.config),
                "requires_clean_data": self.requires_clean_data,
                "needs_trained_model": self.needs_trained_model}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(dataclasses.asdict(self.config))})"


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with freshly initialized parameters (seeded), same architecture."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters") and m is not fresh:
                m.reset_parameters()
    return fresh


@dataclass
class NoDefenseConfig(DefenseConfig):
    """Plain training on the given data; no knobs."""


@DEFENSES.register("none")
class NoDefense(Defense):
    """No defense: plain training of the given model on the poisoned set (the baseline)."""

    Config = NoDefenseConfig

    def run(self, data, model, *, clean_set, monitor):
        history = self.timed("train", lambda: self.engine.fit(
            model, self.engine.data(data), data.labels, self.train, desc="train"))
        return DefenseResult(model=model, history={"train": history})

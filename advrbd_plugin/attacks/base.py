"""The ``Attack`` base class and its typed config.

An attack is a config dataclass plus three trigger hooks on float NCHW batches in
[0, 1] (``train_trigger``, ``cover_trigger``, ``test_trigger``). The base class does
the rest, once for every attack: sample selection, labels, quantization back to the
input dtype, ``GroundTruth`` and the triggered test set.

A new attack, in the user's own module::

    @dataclass
    class MyConfig(AttackConfig):
        value: float = 1.0

    @ATTACKS.register("mine")
    class Mine(Attack):
        Config = MyConfig

        def train_trigger(self, x, gen):
            x = x.clone()
            x[:, :, :2, :2] = self.config.value
            return x
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

import numpy as np
import torch

from ..types import (GroundTruth, PoisonedDataset, TriggeredTestSet, as_tensor_images,
                     to_float_nchw, to_uint8_nhwc)

__all__ = ["Attack", "AttackConfig", "AttackConfigError", "check_config_types", "check_range",
           "rand"]


class AttackConfigError(ValueError):
    """A bad attack config: unknown key, wrong type or value out of range."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against a simple annotation (bool/int/float/str/Optional/list) and
    return it normalized (ints accepted as floats, paths as str, tuples as lists)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _coerce(value, inner[0], where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise AttackConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, (bool, np.bool_)),
        int: isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)),
        float: isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)),
        str: isinstance(value, (str, os.PathLike)),
    }
    if tp not in ok:
        return value
    if not ok[tp]:
        raise AttackConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return os.fspath(value) if tp is str else tp(value)


def check_config_types(cfg: Any) -> None:
    """Validate and normalize every field of a config dataclass against its annotation."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        where = f"{type(cfg).__name__}.{f.name}"
        setattr(cfg, f.name, _coerce(getattr(cfg, f.name), hints[f.name], where))


def check_range(cfg: Any, name: str, lo: float, hi: float, lo_open: bool = False,
                hi_open: bool = False) -> None:
    """Raise AttackConfigError unless ``lo <(=) cfg.name <(=) hi``."""
    v = getattr(cfg, name)
    if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise AttackConfigError(f"{type(cfg).__name__}.{name} must be in {interval}, got {v!r}")


@dataclass
class AttackConfig:
    """Knobs every attack has.

    poison_ratio: fraction of the WHOLE training set that is poisoned, in (0, 1).
    target: the attacker's label (all-to-one).
    """

    poison_ratio: float = 0.05
    target: int = 1

    def __post_init__(self) -> None:
        check_config_types(self)
        check_range(self, "poison_ratio", 0.0, 1.0, lo_open=True, hi_open=True)
        if self.target < 0:
            raise AttackConfigError(f"{type(self).__name__}.target must be >= 0, got {self.target}")


def rand(gen: torch.Generator, *shape: int, device: Any = "cpu") -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the CPU from ``gen`` (same numbers on every device)."""
    return torch.rand(shape, generator=gen).to(device)


class Attack:
    """Base class of every attack.

    ``Attack(config=None, **overrides)``: ``config`` is a ``Config`` instance or a dict;
    keyword overrides are merged on top; unknown keys and bad values raise
    ``AttackConfigError``.

    Subclasses set ``Config`` and implement ``train_trigger`` (and ``cover_trigger`` /
    ``test_trigger`` when they differ); they may narrow the candidate samples. By
    default poison and cover samples come from the non-target classes, so every
    trigger-bearing sample labelled ``target`` is a poison sample.
    """

    Config: ClassVar[type] = AttackConfig
    registry_name: ClassVar[str]

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        cls = type(self).Config
        if isinstance(config, dict):
            overrides = {**config, **overrides}
            config = None
        if config is None:
            config = cls()
        elif not isinstance(config, cls):
            raise AttackConfigError(f"{self.name}: config must be a {cls.__name__} or a dict, "
                                    f"got {type(config).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
            hint = "".join(f" ({k!r}: did you mean {m[0]!r}?)" for k, m in hints.items() if m)
            raise AttackConfigError(f"{self.name}: unknown config key(s) {unknown}.{hint} "
                                    f"Valid keys: {', '.join(valid) or '(none)'}")
        self.config = dataclasses.replace(config, **overrides)

    @property
    def name(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__.lower())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # -- hooks: images are float (n, C, H, W) in [0, 1] on any device -----------------
    def train_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The training trigger applied to poison samples; returns (n, C, H, W) in [0, 1]."""
        raise NotImplementedError(f"attack {self.name!r} defines no trigger")

    def cover_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The trigger on cover samples (default: the training trigger)."""
        return self.train_trigger(x, gen)

    def test_trigger(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The test-time trigger (default: the training trigger)."""
        return self.train_trigger(x, gen)

    def poison_candidates(self, labels: torch.Tensor) -> tuple[torch.Tensor, str]:
        """(bool mask of samples that may be poisoned, description for messages)."""
        t = self.config.target
        return labels != t, f"non-target samples (label != {t})"

    def cover_candidates(self, labels: torch.Tensor) -> torch.Tensor:
        """Bool mask of samples that may become covers (poison samples are excluded later)."""
        return labels != self.config.target

    def test_candidates(self, labels: torch.Tensor) -> torch.Tensor:
        """Bool mask of test samples that receive the test trigger."""
        return labels != self.config.target

    def num_covers(self, n: int, n_poison: int) -> int:
        """Number of cover samples: round(cover_ratio * N) for attacks with covers, else 0."""
        ratio = getattr(self.config, "cover_ratio", 0.0)
        return round(ratio * n)

    def check_classes(self, num_classes: int) -> None:
        """Raise ValueError when a class index in the config does not exist."""
        if self.config.target >= num_classes:
            raise ValueError(f"{self.name}: target {self.config.target} is out of range for "
                             f"a dataset with {num_classes} classes (valid: 0..{num_classes - 1})")

    # -- the work --------------------------------------------------------------------
    def poison(self, dataset: PoisonedDataset, seed: int = 0) -> PoisonedDataset:
        """A poisoned copy of the clean ``dataset``, same dtype and layout, with ``truth``.

        Poisons round(poison_ratio * N) candidate samples (and ``num_covers`` covers),
        chosen with a generator seeded by ``seed``; every other sample is untouched.
        """
        if dataset.truth is not None and bool(
                (dataset.truth.poison_mask | dataset.truth.cover_mask).any()):
            raise ValueError(f"{self.name}: the dataset is already poisoned "
                             f"(by {dataset.truth.attack!r}); start from a clean dataset")
        self.check_classes(dataset.num_classes)
        n = len(dataset)
        labels = dataset.labels.cpu()
        gen = torch.Generator().manual_seed(int(seed))

        n_poison = round(self.config.poison_ratio * n)
        if n_poison == 0:
            raise ValueError(f"{self.name}: poison_ratio {self.config.poison_ratio} poisons no "
                             f"sample of {n}; raise poison_ratio")
        cand, desc = self.poison_candidates(labels)
        poison_idx = self._pick(cand, n_poison, gen, f"poison_ratio {self.config.poison_ratio}",
                                desc, n)
        poison_mask = torch.zeros(n, dtype=torch.bool)
        poison_mask[poison_idx] = True
        cover_cand = self.cover_candidates(labels) & ~poison_mask
        cover_idx = self._pick(cover_cand, self.num_covers(n, n_poison), gen, "the cover ratio",
                               "unpoisoned samples of the cover classes", n)
        cover_mask = torch.zeros(n, dtype=torch.bool)
        cover_mask[cover_idx] = True

        device = dataset.images.device
        images = dataset.images.clone()
        for idx, hook in ((poison_idx, self.train_trigger), (cover_idx, self.cover_trigger)):
            if len(idx):
                idx = idx.to(device)
                images[idx] = _like(hook(to_float_nchw(dataset.images[idx]), gen), images)
        dev = dataset.labels.device
        new_labels = dataset.labels.clone()
        new_labels[poison_idx.to(dev)] = self.config.target
        truth = GroundTruth(dataset.labels.clone(), poison_mask.to(dev), cover_mask.to(dev),
                            self.config.target, self.name)
        return dataclasses.replace(dataset, images=images, labels=new_labels, truth=truth)

    def triggered_test_set(self, images: Any, labels: Any, num_classes: Optional[int] = None,
                           seed: int = 0) -> TriggeredTestSet:
        """The test-time trigger on every test candidate (non-target samples; TaCT: the
        source class). images: uint8 NHWC or float NCHW in [0, 1]; output in the same form.

        num_classes defaults to max(max label, target) + 1; ``seed`` drives random
        test-time transforms (PhysicalBA).
        """
        images = as_tensor_images(images, f"{self.name} test images")
        labels = torch.as_tensor(labels).long().to(images.device)
        if num_classes is None:
            num_classes = max(int(labels.max()), self.config.target) + 1
        self.check_classes(num_classes)
        sel = self.test_candidates(labels)
        if not bool(sel.any()):
            raise ValueError(f"{self.name}: no test sample is eligible for the trigger")
        gen = torch.Generator().manual_seed(int(seed))
        x = images[sel]
        triggered = _like(self.test_trigger(to_float_nchw(x), gen), x)
        return TriggeredTestSet(triggered, torch.full_like(labels[sel], self.config.target),
                                labels[sel], num_classes, attack=self.name)

    def _pick(self, cand: torch.Tensor, k: int, gen: torch.Generator, asked: str, desc: str,
              n: int) -> torch.Tensor:
        idx = cand.nonzero().squeeze(1)
        if k > len(idx):
            raise ValueError(f"{self.name}: {asked} asks for {k} of {n} samples, but only "
                             f"{len(idx)} are eligible ({desc}); lower it to at most "
                             f"{len(idx) / n:.4g} of the dataset")
        return idx[torch.randperm(len(idx), generator=gen)[:k]]


def _like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Float NCHW [0, 1] -> the dtype/layout of ``ref`` (uint8 NHWC rounded, or float NCHW)."""
    x = x.clamp(0.0, 1.0)
    return to_uint8_nhwc(x) if ref.dtype == torch.uint8 else x.to(ref.dtype)

"""D-BR (Chen, Wu and Wang, "Effective Backdoor Defense by Exploiting Sensitivity of
Poisoned Samples", NeurIPS 2022): sample distinguishment, then backdoor removal.

Data: the poisoned training set and a freshly initialized model; no clean data.

1. ``sd``: train the model on the poisoned set without augmentation for a short while
   (``notrans_epochs_frac``); poisoned samples are learned first and their features are
   sensitive to transformations.
2. ``fct``: feature consistency towards transformations, FCT(x) = mean over tau in
   {rotate, affine} of the mean squared difference of penultimate features f(x), f(tau(x)).
   The ``clean_ratio`` lowest-FCT samples form D_c, the ``poison_ratio`` highest form D_p.
3. ``train``: continue training with the plain recipe, giving the backdoored model.
4. ``br``: ``rounds`` rounds of one epoch of (bounded) gradient ascent on D_p followed by
   one epoch of learning D_c, at a small constant learning rate.

Chen et al. also fine-tune the SD model with an intra-class feature loss; our engine
trains with cross-entropy only, so the SD stage is plain training without augmentation.
The transforms follow the authors' settings: rotation by up to 180 degrees, translation by
up to 20% of the image side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import DEFENSES
from ..types import DefenseResult, to_float_nchw
from ._shared import check_fraction, check_positive, fit_stage, model_state
from .base import Defense, DefenseConfig

__all__ = ["DBR", "DBRConfig", "random_transform"]


@dataclass
class DBRConfig(DefenseConfig):
    """clean_ratio / poison_ratio: alpha_c / alpha_p, shares of the data taken as D_c / D_p.
    notrans_epochs_frac, train_epochs_frac: SD training and the continued training,
    relative to the plain recipe's epochs. rounds: unlearn/relearn rounds (each costs
    (alpha_c + alpha_p) of an epoch). br_lr_frac: their learning rate / the plain lr.
    ascent_bound: stop ascending a D_p sample once its loss exceeds this."""

    clean_ratio: float = 0.2
    poison_ratio: float = 0.05
    notrans_epochs_frac: float = 0.12
    train_epochs_frac: float = 1.0
    rounds: int = 20
    br_lr_frac: float = 0.001
    ascent_bound: float = 3.0


def random_transform(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """x (B, C, H, W) in [0, 1] -> the same batch rotated uniformly in [-180, 180] degrees
    ('rotate') or translated uniformly by up to 20% of each side ('affine'); zero fill."""
    b = len(x)
    theta = torch.zeros(b, 2, 3)
    if kind == "rotate":
        a = (torch.rand(b, generator=generator) * 2 - 1) * math.pi
        theta[:, 0, 0], theta[:, 0, 1] = a.cos(), -a.sin()
        theta[:, 1, 0], theta[:, 1, 1] = a.sin(), a.cos()
    else:
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = (torch.rand(b, 2, generator=generator) * 2 - 1) * 0.2 * 2  # grid units
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False).clamp(0, 1)


@DEFENSES.register("dbr")
class DBR(Defense):
    """D-BR: FCT-based sample distinguishment, then rounds of unlearning and relearning."""

    Config = DBRConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        check_fraction(self, "clean_ratio", "poison_ratio")
        check_positive(self, "notrans_epochs_frac", "train_epochs_frac", "br_lr_frac", "ascent_bound")
        if self.config.clean_ratio + self.config.poison_ratio > 1:
            raise ValueError("dbr: expected clean_ratio + poison_ratio <= 1, found "
                             f"{self.config.clean_ratio + self.config.poison_ratio:g}")
        if self.config.rounds < 1:
            raise ValueError(f"dbr.rounds: expected an integer >= 1, found {self.config.rounds!r}")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        c, eng, train = self.config, self.engine, self.train
        dev = eng.data(data)
        history = {"sd": fit_stage(self, "sd", model, dev, data.labels, train.replace(
            epochs=c.notrans_epochs_frac * train.epochs, augment=False))}
        fct = self.timed("fct", lambda: self.fct(model, data))
        order = fct.argsort()
        n = len(order)
        clean = torch.zeros(n, dtype=torch.bool)
        poison = torch.zeros(n, dtype=torch.bool)
        clean[order[:int(c.clean_ratio * n)]] = True
        poison[order[n - max(1, int(c.poison_ratio * n)):]] = True
        history["train"] = fit_stage(self, "train", model, dev, data.labels,
                                     train.replace(epochs=c.train_epochs_frac * train.epochs))
        out = self.stage("br", lambda: self.remove(model, dev, data.labels, clean, poison, monitor))
        model.load_state_dict(out["state"])
        history["br"] = out["history"]
        return DefenseResult(model=model, scores=fct, poison_mask=poison, history=history,
                             extra={"clean_set": int(clean.sum()), "poison_set": int(poison.sum())})

    def fct(self, model, data, chunk: int = 2048) -> torch.Tensor:
        """(N,) FCT of every sample under ``model`` (features in eval mode)."""
        eng, out = self.engine, []
        gen = eng.generator()
        for s in range(0, len(data), chunk):
            x = to_float_nchw(data.images[s:s + chunk])
            f0 = eng.features(model, eng.data(x, data.mean, data.std))
            diffs = [((eng.features(model, eng.data(random_transform(x, kind, gen), data.mean,
                                                    data.std)) - f0) ** 2).mean(1)
                     for kind in ("rotate", "affine")]
            out.append(torch.stack(diffs).mean(0))
        return torch.cat(out)

    def remove(self, model, dev, labels, clean, poison, monitor) -> dict:
        """The BR rounds on ``model`` in place; returns {'history', 'state'} for the stage."""
        c = self.config
        cfg = self.train.replace(epochs=1, lr=c.br_lr_frac * self.train.lr, schedule="constant")
        history = []
        for r in range(c.rounds):
            self.engine.fit(model, dev, labels, cfg, weights=-poison.float(),
                            ascent_bound=c.ascent_bound, desc=f"dbr unlearn {r}")
            down = self.engine.fit(model, dev, labels, cfg, weights=clean.float(),
                                   desc=f"dbr relearn {r}")
            record = {"round": r, "relearn_loss": down[-1]["loss"]}
            if monitor is not None and ((r + 1) % 5 == 0 or r == c.rounds - 1):
                record.update(monitor(model))  # every 5th round: monitoring costs time too
            history.append(record)
        return {"history": history, "state": model_state(model)}

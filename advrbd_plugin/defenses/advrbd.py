"""AdvrBD / MeCa (Pu, Chen et al., arXiv:2405.12719): a clean model from a poisoned set,
with no clean data and no knowledge of the poison ratio.

Needs only the (possibly poisoned) training set and an architecture. Stages (each one
checkpointed when the runner gives a checkpoint folder):

0. ``warmup``: train the model on the poisoned set for ``warmup_frac`` of the plain
   budget; backdoors are learned first, so this is a backdoored detector.
1. ``partition``: per sample, a random square patch mask m of half-size r and a PGD
   perturbation |delta|_inf <= eps inside it that maximises KL(p(x) || p(x + m*delta)).
   Poisoned samples are robust (low KL). The ``seed_frac`` highest-KL samples of each
   class form the clean seed D_c.
2. ``enhance``: ``rounds`` rounds of unlearning D_c while learning the rest; after each
   round the ``grow_frac`` least consistent samples of each class (highest loss under the
   current model) join D_c. Unlearning is gradient ascent on the cross-entropy, stopped per
   sample once it exceeds ``ascent_bound`` (``unlearn: ascent``; ``complement`` descends
   -log(1 - p_y) instead), with ``ascent_weight`` times the weight of the learned samples, so
   clean accuracy collapses while the backdoor stays: a backdoor-enhanced model.
3. ``split``: samples the enhanced model misclassifies are deemed clean, the rest flagged.
   The per-sample ``scores`` are the enhanced model's p(given label | x) (higher = more
   suspicious); the KL of step 1 is kept in ``arrays["kl"]``.
4. ``clean`` + ``relearn`` (``relearn: finetune``, the default): a fresh model trains on the
   clean part; with ``relabel``, every flagged sample it disagrees with gets its prediction as
   label (the others keep theirs) and the model is fine-tuned on the union. Relearning
   triggered inputs under non-target labels removes backdoor the clean model took from poison
   the split missed. ``relearn: self`` does both in one training instead: after
   ``relabel_start`` of its steps the flagged samples join under the model's own prediction,
   refreshed every epoch (higher accuracy, but the model's own labels can lock a leaked robust
   backdoor in: docs/advrbd.md).

The paper's formulas and hyperparameters were lost; the defaults here are ours,
calibrated on CIFAR-10 BadNet at CPU scale (docs/advrbd.md) and used unchanged for every
attack and data size.
Class-balanced seed and growth are our change: a global ranking empties the target
class (its clean samples look consistent under a backdoored model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import masked_kl_scores
from ..registry import DEFENSES
from ..types import DefenseResult, PoisonedDataset
from .base import Defense, DefenseConfig, reinitialize

__all__ = ["AdvrBD", "AdvrBDConfig"]


@dataclass
class AdvrBDConfig(DefenseConfig):
    """Knobs; ``*_frac`` epochs are fractions of the plain recipe's epochs."""

    detector: str = "warmup"        # warmup: train one; given: use the model passed in
    warmup_frac: float = 0.5
    eps: float = 0.0314             # 8/255, L-inf budget inside the patch, [0, 1] units
    radius_frac: float = 0.125      # patch half-size / image side (4 px at 32x32)
    pgd_steps: int = 1
    mask_repeats: int = 1
    score_frac: float = 0.5         # random share of each class scored in stage 1
    seed_frac: float = 0.1          # p: the clean seed D_c, per class (the scored part's top)
    rounds: int = 2                 # T
    grow_frac: float = 0.15         # D_c growth per round, per class
    enhance_epochs: float = 0.5     # passes over the learned set per round
    enhance_lr: float = 0.01
    unlearn: str = "ascent"         # ascent: bounded CE ascent; complement: descend -log(1 - p_y)
    ascent_weight: float = 3.0      # weight of the unlearned samples' loss vs the learned ones'
    ascent_bound: float = 3.0       # ascent only: stop ascending a sample once its CE exceeds this
    clean_epochs_frac: float = 0.75  # finetune: the clean model's epochs over the unflagged part
    relabel: bool = True
    relearn: str = "finetune"       # finetune: relabel, then fine-tune; self: one self-labeled run
    relearn_epochs_frac: float = 0.25
    relearn_lr_frac: float = 0.1    # relearning lr / plain lr
    self_epochs_frac: float = 0.9   # self: the run's steps / a plain training's
    relabel_start: float = 0.45     # self: flagged samples join after this share of the steps


@DEFENSES.register("advrbd")
class AdvrBD(Defense):
    """AdvrBD: partition by masked adversarial KL, backdoor enhancement, split, clean
    training, relabel and relearn. No clean data, no poison-ratio input."""

    Config = AdvrBDConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        c = self.config
        if c.detector not in ("warmup", "given"):
            raise ValueError(f"advrbd.detector: expected 'warmup' or 'given', found {c.detector!r}")
        if c.relearn not in ("finetune", "self"):
            raise ValueError(f"advrbd.relearn: expected 'finetune' or 'self', found {c.relearn!r}")
        if (c.relabel and c.relearn == "finetune"
                and not (c.relearn_epochs_frac > 0 and c.relearn_lr_frac > 0)):
            raise ValueError("advrbd: relabel needs relearn_epochs_frac > 0 and relearn_lr_frac > 0")
        if c.unlearn not in ("complement", "ascent"):
            raise ValueError(f"advrbd.unlearn: expected 'complement' or 'ascent', found {c.unlearn!r}")
        for name in ("warmup_frac", "clean_epochs_frac", "self_epochs_frac", "enhance_epochs",
                     "enhance_lr", "eps", "ascent_weight", "ascent_bound"):
            if not getattr(c, name) > 0:
                raise ValueError(f"advrbd.{name}: expected > 0, found {getattr(c, name)}")
        for name in ("seed_frac", "grow_frac", "radius_frac"):
            if not 0 < getattr(c, name) < 1:
                raise ValueError(f"advrbd.{name}: expected a fraction in (0, 1), found {getattr(c, name)}")
        if not 0 <= c.relabel_start < 1:
            raise ValueError(f"advrbd.relabel_start: expected a share of the clean model's steps in "
                             f"[0, 1), found {c.relabel_start}")
        if not c.seed_frac < c.score_frac <= 1:
            raise ValueError(f"advrbd.score_frac: expected seed_frac < score_frac <= 1, found "
                             f"seed_frac={c.seed_frac}, score_frac={c.score_frac}")
        if c.eps > 1:
            raise ValueError(f"advrbd.eps: expected a budget in [0, 1] pixel units, found {c.eps}")
        if c.pgd_steps < 1 or c.mask_repeats < 1 or c.rounds < 0:
            raise ValueError("advrbd: expected pgd_steps >= 1, mask_repeats >= 1, rounds >= 0; "
                             f"found {c.pgd_steps}, {c.mask_repeats}, {c.rounds}")

    # ------------------------------------------------------------------------------
    def run(self, data: PoisonedDataset, model, *, clean_set, monitor) -> DefenseResult:
        c, eng, E = self.config, self.engine, self.train.epochs
        dev = eng.data(data)
        labels = data.labels
        init = reinitialize(model, eng.seed + 1)  # the clean model starts from fresh weights
        history: dict[str, list] = {}

        def load(state_key, out):
            model.load_state_dict(out[state_key])
            return out

        # 0. detector
        if c.detector == "warmup":
            out = self.stage("warmup", lambda: {
                "history": eng.fit(model, dev, labels, self.train.replace(epochs=c.warmup_frac * E),
                                   desc="advrbd warm-up"),
                "state": _state(model)})
            load("state", out)
            history["warmup"] = out["history"]
        # 1. partition
        h, w = data.input_size
        radius = max(1, int(round(c.radius_frac * min(h, w))))
        out = self.stage("partition", lambda: self._partition(model, data, radius))
        kl = out["kl"]  # NaN where not scored
        seed = _top_per_class(kl, labels, data.num_classes, c.seed_frac, kl.isnan())
        # 2. backdoor enhancement
        out = self.stage("enhance", lambda: self._enhance(model, dev, labels, seed, data.num_classes,
                                                          monitor))
        load("state", out)
        unlearned, history["enhance"] = out["unlearned"], out["history"]
        # 3. split, on the enhanced model's logits (autocast: argmax and p_y need no fp32)
        logits = out.get("logits")
        logits = eng.logits(model, dev, desc="advrbd split") if logits is None else logits
        flagged = logits.argmax(1) == labels
        fit = logits.softmax(1).gather(1, labels[:, None]).squeeze(1)  # enhanced p(label | x)
        if bool(flagged.all()):
            raise RuntimeError("advrbd: the split flagged every sample (the enhanced model fits them "
                               "all), so nothing is left to train the clean model on; raise "
                               "ascent_weight or rounds so that enhancement unlearns the clean data")
        # 4. clean model, relabel and relearn
        clean_model = init
        if c.relearn == "self":
            out = self.stage("clean", lambda: self._self_labeled(clean_model, data, dev, labels, flagged))
            clean_model.load_state_dict(out["state"])
            relabels, history["clean"] = out["relabels"], out["history"]
        else:
            out = self.stage("clean", lambda: {
                "history": eng.fit(clean_model, dev, labels,
                                   self.train.replace(epochs=c.clean_epochs_frac * E),
                                   weights=(~flagged).float(), desc="advrbd clean"),
                "state": _state(clean_model)})
            clean_model.load_state_dict(out["state"])
            history["clean"] = out["history"]
            relabels = torch.full_like(labels, -1)
            if c.relabel and flagged.any():
                fidx = torch.nonzero(flagged).flatten()  # only the flagged part is relabeled
                new = labels.clone()
                new[fidx] = eng.predict(clean_model, eng.data(data.subset(fidx)), desc="advrbd relabel")
                move = new != labels  # flagged samples it disagrees with; agreements keep theirs
                relabels[move] = new[move]
                out = self.stage("relearn", lambda: {
                    "history": eng.fit(clean_model, dev, torch.where(move, new, labels),
                                       self.train.replace(epochs=c.relearn_epochs_frac * E,
                                                          lr=self.train.lr * c.relearn_lr_frac,
                                                          warmup=0.0), desc="advrbd relearn"),
                    "state": _state(clean_model)})
                clean_model.load_state_dict(out["state"])
                history["relearn"] = out["history"]
        if monitor is not None:
            history["final"] = [monitor(clean_model)]
        counts = torch.bincount(labels[~flagged], minlength=data.num_classes)
        return DefenseResult(
            model=clean_model,
            scores=fit,
            poison_mask=flagged, relabels=relabels, history=history,
            arrays={"kl": kl, "seed": seed, "unlearned": unlearned},
            extra={"seed_size": int(seed.sum()), "unlearned_size": int(unlearned.sum()),
                   "flagged": int(flagged.sum()), "relabeled": int((relabels >= 0).sum()),
                   "clean_part_per_class": counts.tolist(), "patch_radius": radius})

    def _self_labeled(self, model, data: PoisonedDataset, dev, labels, flagged) -> dict:
        """Fresh ``model`` on the unflagged part; with ``relabel``, the flagged samples join
        after ``relabel_start`` of the steps under the model's own argmax labels (refreshed
        every epoch). Returns the state, the relabels ((N,) int64, -1 = unchanged) and the
        per-epoch history."""
        c, eng = self.config, self.engine
        n, kept = len(labels), int((~flagged).sum())
        epochs = c.self_epochs_frac * self.train.epochs * n / kept  # passes over the kept part
        fidx = torch.nonzero(flagged).flatten()
        fdev = eng.data(data.subset(fidx)) if c.relabel and len(fidx) else None
        current = labels.clone()
        counts: dict[int, int] = {}

        def refresh(epoch, m):
            if fdev is None or epoch + 1 < c.relabel_start * epochs:
                return None
            current[fidx] = eng.logits(m, fdev).argmax(1)  # logits come back on the CPU
            counts[epoch] = int((current[fidx] != labels[fidx]).sum())
            return current.clone(), torch.ones(n)

        rows = eng.fit(model, dev, labels, self.train.replace(epochs=epochs),
                       weights=(~flagged).float(), refresh=refresh, desc="advrbd clean")
        for epoch, moved in counts.items():
            rows[epoch]["relabeled"] = moved
        relabels = torch.where(current != labels, current, torch.full_like(labels, -1))
        return {"state": _state(model), "relabels": relabels, "history": rows}

    def _partition(self, model, data: PoisonedDataset, radius: int) -> dict:
        """Masked adversarial KL of a random ``score_frac`` of each class (NaN elsewhere)."""
        c, eng = self.config, self.engine
        scored = _random_per_class(data.labels, data.num_classes, c.score_frac, eng.generator())
        idx = torch.nonzero(scored).flatten()
        kl = torch.full((len(data),), float("nan"))
        kl[idx] = masked_kl_scores(eng, model, eng.data(data.subset(idx)), eps=c.eps, radius=radius,
                                   steps=c.pgd_steps, repeats=c.mask_repeats, desc="advrbd partition")
        return {"kl": kl}

    def _enhance(self, model, dev, labels, seed, num_classes, monitor) -> dict:
        """Rounds of bounded unlearning of D_c plus learning of the rest; D_c grows. Returns
        the enhanced state, D_c, the per-round history and the final model's (N, K) logits
        (None without rounds)."""
        c, eng = self.config, self.engine
        unlearned = seed.clone()
        cfg = self.train.replace(epochs=c.enhance_epochs, lr=c.enhance_lr, schedule="constant",
                                 warmup=0.0)
        rows, logits = [], None
        for r in range(c.rounds):
            weights = torch.where(unlearned, -c.ascent_weight, 1.0)
            eng.fit(model, dev, labels, cfg, weights=weights, ascent_bound=c.ascent_bound,
                    unlearn=c.unlearn, desc=f"advrbd enhance {r + 1}/{c.rounds}")
            # autocast logits: a ranking, and the last round's feed the split
            logits = eng.logits(model, dev, desc=f"advrbd enhance {r + 1}/{c.rounds}: ranking")
            loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            row = {"round": r + 1, "unlearned": int(unlearned.sum()),
                   "train_fit": float((loss < 0.693).float().mean())}
            if monitor is not None:
                row.update(monitor(model))
            rows.append(row)
            if r + 1 < c.rounds:
                unlearned |= _top_per_class(loss, labels, num_classes, c.grow_frac, unlearned)
        return {"state": _state(model), "unlearned": unlearned, "history": rows, "logits": logits}


def _state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _random_per_class(labels: torch.Tensor, num_classes: int, frac: float,
                      gen: torch.Generator) -> torch.Tensor:
    """(N,) bool: a random ``frac`` of each class (at least one sample per non-empty class)."""
    pick = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()
        take = max(1, int(round(frac * len(idx)))) if len(idx) else 0
        pick[idx[torch.randperm(len(idx), generator=gen)[:take]]] = True
    return pick


def _top_per_class(score: torch.Tensor, labels: torch.Tensor, num_classes: int, frac: float,
                   exclude: torch.Tensor) -> torch.Tensor:
    """(N,) bool: in each class, the ``frac`` * class-size highest-``score`` samples not in
    ``exclude``."""
    pick = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(num_classes):
        idx = torch.nonzero((labels == k) & ~exclude).flatten()
        take = min(len(idx), int(round(frac * int((labels == k).sum()))))
        if take:
            pick[idx[score[idx].argsort(descending=True)[:take]]] = True
    return pick

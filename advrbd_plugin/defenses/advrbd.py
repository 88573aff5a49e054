"""AdvrBD / MeCa (Pu, Chen et al., arXiv:2405.12719): a clean model from a poisoned set,
with no clean data and no knowledge of the poison ratio.

Needs only the (possibly poisoned) training set and an architecture. Two variants share
stages 0-2 (each stage checkpointed when the runner gives a checkpoint folder):

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
   clean accuracy collapses while the backdoor stays: a backdoor-enhanced model. Samples the
   enhanced model still fits (argmax = label) are its flags F.

``variant: paper`` (registered as ``advrbd_paper``), the literal reading:

3. split: F is the poisoned part, the rest is clean.
4. ``clean`` + ``relearn`` (``relearn: finetune``): a fresh model trains on the clean part;
   with ``relabel``, every flagged sample it disagrees with gets its prediction as label and
   the model is fine-tuned on the union. ``relearn: self`` does both in one training: after
   ``relabel_start`` of its steps the flagged samples join under the model's own prediction.

``variant: targeted`` (the default ``advrbd``; ours, docs/advrbd.md says why):

0b. ``cluster`` (right after the warm-up, which here is a full plain training): per class,
   2-means on the warm-up model's penultimate features (ICA to ``cluster_dims``, as AC); a smaller
   cluster under ``cluster_share`` of its class is flagged (C, as AC). A sample whose label
   the warm-up model contradicts (p(another class) >= ``pseudo_threshold``) is flagged too
   (X: dirty-label poison the model did not learn, e.g. WaNet's, and label noise).
3. split: the two signals must agree to name a class. Per class k, the enrichment
   d_k = (share of F in k's smaller cluster) - (share of F in its larger one); k is a
   suspected target when d_k >= ``enrich_min`` and d_k is a robust outlier among the
   classes (z = (d - median) / (1.4826 MAD) > ``target_z``). A class is named too when the
   enhanced model collapsed onto it: it predicts k for at least ``collapse_min`` of the
   samples labeled otherwise (then it fits all of k, so d_k is 0). Suspects = C, X and, in
   each suspected target class, its smaller cluster (whatever its share: a clean-label
   attack may poison half its class), the smaller 2-means cluster of the enhanced model's
   features (the trigger dominates them), the samples the warm-up model gives another
   class at least half its probability, and F where the class was named by enrichment.
   Poison is the smaller, F-rich cluster; a larger F-rich cluster names nothing (on digits
   it was a whole clean class). Dirty-label poison
   carries the target label, so a class that is not named keeps its labels (bar C and X).
4. ``clean``: one semi-supervised training of a fresh model (a plain training's steps).
   Non-suspects learn their labels; suspects are unlabeled: after ``pseudo_start`` of the
   steps, each suspect joins under the model's prediction with the suspected target classes
   suppressed, when that prediction's probability is at least ``pseudo_threshold``
   (refreshed every epoch). No suspect ever trains under a suspected target class; a
   flagged clean sample of another class can come back under its own label.

The paper's formulas and hyperparameters were lost; the defaults here are ours, measured
on the CIFAR-10 subset (docs/advrbd.md) and used unchanged for every attack and data size.
Class-balanced seed and growth are our change: a global ranking empties the target
class (its clean samples look consistent under a backdoored model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import masked_kl_scores
from ..registry import DEFENSES
from ..types import DefenseResult, PoisonedDataset
from ._shared import class_indices, model_state as _state
from .ac import two_means_split
from .base import Defense, DefenseConfig, reinitialize

__all__ = ["AdvrBD", "AdvrBDConfig", "AdvrBDPaper", "AdvrBDPaperConfig", "fit_enrichment",
           "prediction_concentration", "suspected_targets"]


@dataclass
class AdvrBDConfig(DefenseConfig):
    """Knobs; ``*_frac`` epochs are fractions of the plain recipe's epochs."""

    variant: str = "targeted"       # targeted: ours (the default); paper: the literal reading
    detector: str = "warmup"        # warmup: train one; given: use the model passed in
    warmup_frac: float = 1.0
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
    cluster_dims: int = 10          # targeted: ICA dimensions of the per-class 2-means
    cluster_share: float = 0.35     # targeted: flag a class's smaller cluster below this share
    target_z: float = 3.0           # targeted: robust z of a class's F enrichment marking a target
    enrich_min: float = 0.5         # targeted: least F-share gap (smaller - larger cluster) of a target
    collapse_min: float = 0.5       # targeted: or the enhanced model sends at least this share of
                                    # the other classes' samples to it
    pseudo_threshold: float = 0.8   # targeted: a suspect joins when p(pseudo-label) >= this
    pseudo_start: float = 0.3       # targeted: suspects may join after this share of the steps


@DEFENSES.register("advrbd")
class AdvrBD(Defense):
    """AdvrBD: partition by masked adversarial KL, backdoor enhancement, a split, then a
    clean model (``variant: targeted``: semi-supervised on the suspects; ``paper``: clean
    training, relabel and relearn). No clean data, no poison-ratio input."""

    Config = AdvrBDConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        c = self.config
        if c.variant not in ("targeted", "paper"):
            raise ValueError(f"advrbd.variant: expected 'targeted' or 'paper', found {c.variant!r}")
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
                     "enhance_lr", "eps", "ascent_weight", "ascent_bound", "target_z"):
            if not getattr(c, name) > 0:
                raise ValueError(f"advrbd.{name}: expected > 0, found {getattr(c, name)}")
        for name in ("seed_frac", "grow_frac", "radius_frac", "cluster_share", "pseudo_threshold",
                     "enrich_min", "collapse_min"):
            if not 0 < getattr(c, name) < 1:
                raise ValueError(f"advrbd.{name}: expected a fraction in (0, 1), found {getattr(c, name)}")
        for name in ("relabel_start", "pseudo_start"):
            if not 0 <= getattr(c, name) < 1:
                raise ValueError(f"advrbd.{name}: expected a share of the clean model's steps in "
                                 f"[0, 1), found {getattr(c, name)}")
        if not c.seed_frac < c.score_frac <= 1:
            raise ValueError(f"advrbd.score_frac: expected seed_frac < score_frac <= 1, found "
                             f"seed_frac={c.seed_frac}, score_frac={c.score_frac}")
        if c.eps > 1:
            raise ValueError(f"advrbd.eps: expected a budget in [0, 1] pixel units, found {c.eps}")
        if c.pgd_steps < 1 or c.mask_repeats < 1 or c.rounds < 0 or c.cluster_dims < 1:
            raise ValueError("advrbd: expected pgd_steps >= 1, mask_repeats >= 1, rounds >= 0, "
                             f"cluster_dims >= 1; found {c.pgd_steps}, {c.mask_repeats}, {c.rounds}, "
                             f"{c.cluster_dims}")
        if c.variant == "targeted" and c.detector != "warmup":
            raise ValueError("advrbd.variant 'targeted' clusters the warm-up model's features: it "
                             "needs detector: warmup")

    # ------------------------------------------------------------------------------
    def run(self, data: PoisonedDataset, model, *, clean_set, monitor) -> DefenseResult:
        c, eng = self.config, self.engine
        dev, labels = eng.data(data), data.labels
        init = reinitialize(model, eng.seed + 1)  # the clean model starts from fresh weights
        history: dict[str, list] = {}
        found = self._detect(data, dev, model, history, monitor)
        flagged = found["fit_flags"]
        if bool(flagged.all()):
            raise RuntimeError("advrbd: the split flagged every sample (the enhanced model fits them "
                               "all), so nothing is left to train the clean model on; raise "
                               "ascent_weight or rounds so that enhancement unlearns the clean data")
        if c.variant == "paper":
            clean_model, relabels = self._paper_tail(init, data, dev, labels, flagged, history)
            arrays, extra = {}, {}
        else:
            suspects, targets, split = self._targeted_split(
                found, labels, data.num_classes,
                lambda ks: self._enhanced_minor(model, data, labels, ks))
            if bool(suspects.all()):
                raise RuntimeError("advrbd: every sample is a suspect, so nothing keeps its label; "
                                   "raise target_z")
            out = self.stage("clean", lambda: self._semi_supervised(init, data, dev, labels, suspects,
                                                                    targets))
            clean_model = init
            clean_model.load_state_dict(out["state"])
            relabels, history["clean"] = out["relabels"], out["history"]
            flagged = suspects
            arrays = {"cluster": found["cluster"], "contradicted": found["contradicted"],
                      "minor": found["minor"],
                      "fit_flag": found["fit_flags"]}
            extra = {"suspected_targets": targets, **split}
        if monitor is not None:
            history["final"] = [monitor(clean_model)]
        counts = torch.bincount(labels[~flagged], minlength=data.num_classes)
        return DefenseResult(
            model=clean_model,
            scores=found["fit"],
            poison_mask=flagged, relabels=relabels, history=history,
            arrays={"kl": found["kl"], "seed": found["seed"], "unlearned": found["unlearned"], **arrays},
            extra={"variant": c.variant, "seed_size": int(found["seed"].sum()),
                   "unlearned_size": int(found["unlearned"].sum()), "flagged": int(flagged.sum()),
                   "relabeled": int((relabels >= 0).sum()),
                   "clean_part_per_class": counts.tolist(), "patch_radius": found["radius"], **extra})

    def _detect(self, data: PoisonedDataset, dev, model, history: dict, monitor) -> dict:
        """Stages 0-2 (and 0b for ``targeted``) on ``model`` in place. Returns per-sample (N,)
        tensors: kl (NaN where not scored), seed, unlearned, fit (the enhanced model's
        p(label | x)), fit_flags (F); for ``targeted`` also minor (the smaller feature cluster
        of each class), cluster (C) and contradicted (X)."""
        c, eng, E = self.config, self.engine, self.train.epochs
        labels = data.labels
        found: dict = {}
        # 0. detector
        if c.detector == "warmup":
            out = self.stage("warmup", lambda: {
                "history": eng.fit(model, dev, labels, self.train.replace(epochs=c.warmup_frac * E),
                                   desc="advrbd warm-up"),
                "state": _state(model)})
            model.load_state_dict(out["state"])
            history["warmup"] = out["history"]
        if c.variant == "targeted":  # 0b. the warm-up model's feature clusters
            out = self.stage("cluster", lambda: self._cluster(model, dev, labels, data.num_classes))
            shares = torch.tensor(out["shares"])
            small_class = (shares < c.cluster_share)[labels]  # NaN compares False
            found.update(minor=out["minor"], cluster=out["minor"] & small_class,
                         contradicted=out["other"] >= c.pseudo_threshold, cluster_shares=out["shares"],
                         misfit=out["other"] >= 0.5)
        # 1. partition
        h, w = data.input_size
        radius = max(1, int(round(c.radius_frac * min(h, w))))
        kl = self.stage("partition", lambda: self._partition(model, data, radius))["kl"]
        seed = _top_per_class(kl, labels, data.num_classes, c.seed_frac, kl.isnan())
        # 2. backdoor enhancement
        out = self.stage("enhance", lambda: self._enhance(model, dev, labels, seed, data.num_classes,
                                                          monitor))
        model.load_state_dict(out["state"])
        history["enhance"] = out["history"]
        # the split's input, on the enhanced model's logits (autocast: argmax and p_y need no fp32)
        logits = out.get("logits")
        logits = eng.logits(model, dev, desc="advrbd split") if logits is None else logits
        predicted = logits.argmax(1)
        found.update(kl=kl, seed=seed, unlearned=out["unlearned"], radius=radius,
                     fit_flags=predicted == labels, predicted=predicted,
                     fit=logits.softmax(1).gather(1, labels[:, None]).squeeze(1))
        return found

    def _cluster(self, model, dev, labels: torch.Tensor, num_classes: int) -> dict:
        """Per class, the smaller 2-means cluster of the ICA-reduced penultimate features
        (``minor``, (N,) bool) and its share of the class; ``other``: the warm-up model's
        highest probability of a class other than the given label ((N,) float in [0, 1])."""
        c, eng = self.config, self.engine
        feats, logits = eng.features(model, dev, with_logits=True, desc="advrbd cluster")
        prob = logits.softmax(1)
        other = prob.scatter(1, labels[:, None], 0.0).max(1).values
        minor = torch.zeros(len(labels), dtype=torch.bool)
        shares = []
        for idx in class_indices(labels, num_classes):
            if len(idx) < 3:
                shares.append(float("nan"))
                continue
            small, _ = two_means_split(feats[idx].double().numpy(), c.cluster_dims, "ica", eng.seed)
            shares.append(round(float(small.mean()), 4))
            minor[idx[torch.from_numpy(small)]] = True
        return {"minor": minor, "shares": shares, "other": other}

    def _targeted_split(self, found: dict, labels: torch.Tensor, num_classes: int,
                        enhanced_minor=None) -> tuple[torch.Tensor, list[int], dict]:
        """Suspects (N,) bool = C, X, and in each suspected target class its smaller feature
        cluster under the warm-up model and (``enhanced_minor``: target classes -> (N,) bool)
        under the enhanced one, the samples the warm-up model does not give half its
        probability to their label, and (where the class is named by enrichment) F. Returns
        them, the target classes (named by enrichment or by collapse) and the per-class
        numbers behind."""
        c = self.config
        fit, minor = found["fit_flags"], found["minor"]
        enrich = fit_enrichment(fit, minor, labels, num_classes)
        enriched = [k for k in suspected_targets(enrich, c.target_z) if float(enrich[k]) >= c.enrich_min]
        conc = prediction_concentration(found["predicted"], labels, num_classes)
        # at most one class can draw over half of the others' samples: no outlier test needed
        collapsed = [k for k in range(num_classes) if float(conc[k]) >= c.collapse_min]
        targets = sorted(set(enriched) | set(collapsed))

        def members(ks):
            return torch.isin(labels, torch.tensor(ks, dtype=labels.dtype))
        # F is evidence only where it splits the class: a collapsed model fits all of it
        suspects = (found["cluster"] | found["contradicted"]
                    | (members(targets) & (minor | found["misfit"])) | (members(enriched) & fit))
        if targets and enhanced_minor is not None:
            suspects |= members(targets) & enhanced_minor(targets)
        split = {"enrichment": [round(v, 4) for v in enrich.tolist()],
                 "concentration": [round(v, 4) for v in conc.tolist()],
                 "named_by": {k: "enrichment" if k in enriched else "collapse" for k in targets},
                 "cluster_share": found["cluster_shares"]}
        return suspects, targets, split

    def _enhanced_minor(self, model, data: PoisonedDataset, labels: torch.Tensor,
                        classes: list[int]) -> torch.Tensor:
        """(N,) bool: in each of ``classes``, the smaller 2-means cluster of the enhanced
        ``model``'s penultimate features (it unlearned the clean task, not the trigger, so
        there the trigger dominates the features)."""
        c, eng = self.config, self.engine
        out = torch.zeros(len(labels), dtype=torch.bool)
        for k in classes:
            idx = torch.nonzero(labels == k).flatten()
            if len(idx) < 3:
                continue
            feats = eng.features(model, eng.data(data.subset(idx)), desc="advrbd split: features")
            small, _ = two_means_split(feats.double().numpy(), c.cluster_dims, "ica", eng.seed)
            out[idx[torch.from_numpy(small)]] = True
        return out

    def _semi_supervised(self, model, data: PoisonedDataset, dev, labels: torch.Tensor,
                         suspects: torch.Tensor, targets: list[int]) -> dict:
        """Fresh ``model``, a plain training's steps: non-suspects under their labels; after
        ``pseudo_start`` of the steps each suspect joins (refreshed every epoch) under the
        model's argmax over the classes not in ``targets``, when that class's probability is
        at least ``pseudo_threshold``. Returns the state, the relabels ((N,) int64: the
        pseudo-label a suspect last trained on where it differs from the given one, else -1)
        and the per-epoch history."""
        c, eng = self.config, self.engine
        n, kept = len(labels), int((~suspects).sum())
        epochs = self.train.epochs * n / kept  # passes over the kept part = a plain run's steps
        sidx = torch.nonzero(suspects).flatten()
        sdev = eng.data(data.subset(sidx)) if len(sidx) else None
        current, weights = labels.clone(), (~suspects).float()
        joined: dict[int, int] = {}

        def refresh(epoch, m):
            if sdev is None or epoch + 1 < c.pseudo_start * epochs:
                return None
            prob = eng.logits(m, sdev).float().softmax(1)
            prob[:, targets] = 0.0  # a suspect never trains under a suspected target class
            conf, pseudo = prob.max(1)
            take = conf >= c.pseudo_threshold
            current[sidx] = pseudo
            weights[sidx] = take.float()
            joined[epoch] = int(take.sum())
            return current.clone(), weights.clone()

        rows = eng.fit(model, dev, labels, self.train.replace(epochs=epochs), weights=weights.clone(),
                       refresh=refresh, desc="advrbd clean")
        for epoch, k in joined.items():
            rows[epoch]["pseudo_labeled"] = k
        moved = suspects & (weights > 0) & (current != labels)
        relabels = torch.where(moved, current, torch.full_like(labels, -1))
        return {"state": _state(model), "relabels": relabels, "history": rows}

    def _paper_tail(self, clean_model, data, dev, labels, flagged, history):
        """Stage 4 of the literal reading: clean model, then relabel and relearn."""
        c, eng, E = self.config, self.engine, self.train.epochs
        if c.relearn == "self":
            out = self.stage("clean", lambda: self._self_labeled(clean_model, data, dev, labels, flagged))
            clean_model.load_state_dict(out["state"])
            relabels, history["clean"] = out["relabels"], out["history"]
            return clean_model, relabels
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
        return clean_model, relabels

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


@dataclass
class AdvrBDPaperConfig(AdvrBDConfig):
    """The literal reading's defaults (``variant: paper``)."""

    variant: str = "paper"
    warmup_frac: float = 0.5


@DEFENSES.register("advrbd_paper")
class AdvrBDPaper(AdvrBD):
    """AdvrBD as the paper reads: split by the enhanced model, clean training, relabel and
    relearn (``variant: paper``)."""

    Config = AdvrBDPaperConfig


def fit_enrichment(fit: torch.Tensor, minor: torch.Tensor, labels: torch.Tensor,
                   num_classes: int) -> torch.Tensor:
    """(K,) float in [-1, 1]: per class, the share of ``fit`` (N,) bool among the class's
    ``minor`` (N,) bool samples minus its share among the others; NaN when either part is empty."""
    out = torch.full((num_classes,), float("nan"))
    for k in range(num_classes):
        ik = labels == k
        a, b = fit[ik & minor], fit[ik & ~minor]
        if len(a) and len(b):
            out[k] = a.float().mean() - b.float().mean()
    return out


def prediction_concentration(predicted: torch.Tensor, labels: torch.Tensor,
                             num_classes: int) -> torch.Tensor:
    """(K,) float in [0, 1]: per class k, the share of the samples labeled otherwise that
    ``predicted`` (N,) int sends to k (a backdoor-enhanced model that lost the clean task
    sends most of them to the target); NaN for a class that holds every sample."""
    out = torch.full((num_classes,), float("nan"))
    for k in range(num_classes):
        other = labels != k
        if bool(other.any()):
            out[k] = (predicted[other] == k).float().mean()
    return out


def suspected_targets(share: torch.Tensor, z: float) -> list[int]:
    """Classes whose ``share`` (K,) is a high robust outlier: (share - median) / (1.4826 MAD)
    above ``z``; NaN classes are ignored, and a zero MAD (all shares alike) flags none."""
    ok = ~share.isnan()
    if int(ok.sum()) < 3:
        return []
    v = share[ok]
    med = v.median()
    mad = 1.4826 * (v - med).abs().median()
    if float(mad) <= 0:
        return []
    score = (share - med) / mad
    return [k for k in range(len(share)) if bool(ok[k]) and float(score[k]) > z]

"""SCAnFT: SCAn detection (Tang et al., "Demon in the Variant: Statistical Analysis of DNNs
for Robust Backdoor Contamination Detection", USENIX Security 2021), then fine-tuning that
unlearns the flagged samples (the SCAnFT baseline of the AdvrBD paper).

Data: the poisoned training set and a freshly initialized model; no clean data (Tang et al.
fit the global model on clean data; here it is fitted on the whole poisoned set).

1. ``detector``: train the model on the whole poisoned set (the plain recipe).
2. ``detect``: untangle the centered penultimate features r = mu_k + eps into a class
   identity mu_k ~ N(0, S_mu) and a variation eps ~ N(0, S_eps) shared by all classes (EM).
   Per class, fit two identities (mu_1, mu_2) under the same S_eps and compute the
   likelihood-ratio statistic J_k of two identities against one. Without clean data S_eps
   is first re-estimated around every class's two subgroup means (``split_variation``).
   Classes whose anomaly index J*_k = (J_k - median J) / (1.4826 MAD J) exceeds
   ``threshold`` are contaminated; their smaller subgroup is flagged (without clean data
   the subgroups cannot be told apart otherwise).
3. ``unlearn``: gradient ascent on the flagged samples (bounded by ``ascent_bound``) while
   learning the rest, from the detector model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_positive, class_indices, fit_stage
from .base import Defense, DefenseConfig

__all__ = ["SCAnFT", "SCAnConfig", "untangle", "two_identities", "split_variation", "scan"]


@dataclass
class SCAnConfig(DefenseConfig):
    """threshold: J* above which a class is contaminated (e^2). detector_epochs_frac,
    unlearn_epochs_frac, unlearn_lr_frac: relative to the plain recipe. ascent_bound: stop
    ascending a flagged sample once its loss exceeds this."""

    threshold: float = 7.389
    detector_epochs_frac: float = 1.0
    unlearn_epochs_frac: float = 0.2
    unlearn_lr_frac: float = 0.1
    ascent_bound: float = 3.0


def _cov(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0)
    return x.T @ x / max(len(x) - 1, 1)


def untangle(r: torch.Tensor, groups: list[torch.Tensor], iters: int = 100,
             tol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """EM for r = mu_k + eps. r: (N, D) centered float64; groups: per-class index tensors.

    E-step: mu_k = S_mu (S_mu + S_eps / n_k)^+ mean_k (posterior mean of the identity).
    M-step: S_mu = cov of the per-sample identities, S_eps = cov of the residuals.
    Returns (S_mu, S_eps), each (D, D).
    """
    groups = [g for g in groups if len(g)]
    ident = torch.zeros_like(r)
    for g in groups:
        ident[g] = r[g].mean(0)
    s_mu, s_eps = _cov(ident), _cov(r - ident)
    for _ in range(iters):
        for g in groups:
            ident[g] = s_mu @ torch.linalg.pinv(s_mu + s_eps / len(g)) @ r[g].mean(0)
        new_mu, new_eps = _cov(ident), _cov(r - ident)
        shift = float(torch.linalg.norm(new_mu - s_mu) + torch.linalg.norm(new_eps - s_eps))
        s_mu, s_eps = new_mu, new_eps
        if shift < tol:
            break
    return s_mu, s_eps


def _mahalanobis(x: torch.Tensor, mu: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    d = x - mu
    return ((d @ f) * d).sum(1)


def two_identities(x: torch.Tensor, s_mu: torch.Tensor, s_eps: torch.Tensor,
                   f: torch.Tensor, iters: int = 100) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One class x (n, D) -> (J, in_group1 (n,) bool, llr (n,)).

    Alternates means and nearest-mean (metric F = S_eps^+) assignment, starting from the
    sign of the top principal direction. J is the mean drop of the Mahalanobis residual
    when each sample may use its subgroup identity instead of the single class identity
    mu = S_mu (S_mu + S_eps / n)^+ mean. llr = half the residual gap, positive toward group 1.
    """
    n = len(x)
    centered = x - x.mean(0)
    group = (centered @ torch.linalg.svd(centered, full_matrices=False).Vh[0]) > 0
    for _ in range(iters):
        if group.all() or not group.any():
            break
        m1, m2 = x[group].mean(0), x[~group].mean(0)
        new = _mahalanobis(x, m1, f) < _mahalanobis(x, m2, f)
        if torch.equal(new, group):
            break
        group = new
    mu = s_mu @ torch.linalg.pinv(s_mu + s_eps / n) @ x.mean(0)
    one = _mahalanobis(x, mu, f)
    if group.all() or not group.any():
        return 0.0, group, torch.zeros(n, dtype=x.dtype)
    d1, d2 = _mahalanobis(x, x[group].mean(0), f), _mahalanobis(x, x[~group].mean(0), f)
    two = torch.where(group, d1, d2)
    return float((one - two).mean()), group, (d2 - d1) / 2


def split_variation(r: torch.Tensor, groups: list[torch.Tensor], s_mu: torch.Tensor,
                    s_eps: torch.Tensor) -> torch.Tensor:
    """S_eps re-estimated from the residuals around each class's two subgroup means.

    Our data-free change: Tang et al. fit the global model on clean data; fitted on the
    poisoned set, the poison's offset inflates S_eps along its own direction and hides
    itself from the test. Splitting every class first removes that offset; a clean class
    barely changes. r: (N, D) centered; returns (D, D).
    """
    f = torch.linalg.pinv(s_eps)
    res, used = torch.zeros_like(r), 0
    for idx in groups:
        if not len(idx):
            continue
        x = r[idx]
        group = two_identities(x, s_mu, s_eps, f)[1]
        for part in (group, ~group):
            if part.any():
                res[idx[part]] = x[part] - x[part].mean(0)
                used += 1
    return res.T @ res / max(len(r) - used, 1)


def scan(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, threshold: float
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """feats (N, D), labels (N,) -> (scores (N,), flagged (N,) bool, J* (K,)).

    score = max(J*_k, 0) * tanh(llr toward the smaller subgroup / 2): large for minority
    samples of anomalous classes, near 0 in normal classes.
    """
    r = feats.double()
    r = r - r.mean(0)
    groups = [g if len(g) >= 2 else g[:0] for g in class_indices(labels, num_classes)]
    s_mu, s_eps = untangle(r, groups)
    s_eps = split_variation(r, groups, s_mu, s_eps)
    f = torch.linalg.pinv(s_eps)
    stat = torch.zeros(num_classes, dtype=torch.float64)
    scores = torch.zeros(len(labels))
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    minority, margin = {}, {}
    for k, idx in enumerate(groups):
        if not len(idx):
            continue
        stat[k], group, llr = two_identities(r[idx], s_mu, s_eps, f)
        small_is_1 = int(group.sum()) <= len(idx) // 2
        minority[k] = group if small_is_1 else ~group
        margin[k] = llr if small_is_1 else -llr
    med = stat.median()
    mad = 1.4826 * (stat - med).abs().median()
    jstar = (stat - med) / mad.clamp_min(1e-12)
    for k, idx in enumerate(groups):
        if k not in minority:
            continue
        scores[idx] = (jstar[k].clamp_min(0) * torch.tanh(margin[k] / 2)).float()
        if jstar[k] > threshold:
            flagged[idx[minority[k]]] = True
    return scores, flagged, jstar.float()


@DEFENSES.register("scanft")
class SCAnFT(Defense):
    """SCAn two-identity test per class, then unlearning of the flagged samples."""

    Config = SCAnConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        check_positive(self, "threshold", "detector_epochs_frac", "unlearn_epochs_frac",
                       "unlearn_lr_frac", "ascent_bound")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        c, eng, train = self.config, self.engine, self.train
        dev = eng.data(data)
        history = {"detector": fit_stage(self, "detector", model, dev, data.labels,
                                         train.replace(epochs=c.detector_epochs_frac * train.epochs))}
        feats = self.timed("features", lambda: eng.features(model, dev))
        scores, flagged, jstar = self.timed(
            "detect", lambda: scan(feats, data.labels, data.num_classes, c.threshold))
        if flagged.any():
            cfg = train.replace(epochs=c.unlearn_epochs_frac * train.epochs,
                                lr=c.unlearn_lr_frac * train.lr)
            history["unlearn"] = fit_stage(self, "unlearn", model, dev, data.labels, cfg,
                                           weights=1 - 2 * flagged.float(),
                                           ascent_bound=c.ascent_bound)
        return DefenseResult(model=model, scores=scores, poison_mask=flagged, history=history,
                             extra={"flagged": int(flagged.sum()),
                                    "anomaly_index": [round(float(v), 3) for v in jstar]})

"""Activation Clustering, AC (Chen et al., "Detecting Backdoor Attacks on Deep Neural
Networks by Activation Clustering", AAAI SafeAI workshop 2019, arXiv:1811.03728).

Data: the poisoned training set and a freshly initialized model; no clean data.

1. ``detector``: train the model on the whole poisoned set (the plain recipe).
2. ``detect``: per class, reduce the penultimate activations to ``dims`` dimensions (ICA as
   in Chen et al., or PCA), split them with 2-means, and flag the smaller cluster when its
   relative size is below ``size_threshold`` (poison forms a small, separate cluster).
3. ``retrain``: train a fresh model on the unflagged samples.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_fraction, check_positive, class_indices, detect_and_retrain
from .base import Defense, DefenseConfig

__all__ = ["ActivationClustering", "ACConfig", "two_means_split"]


@dataclass
class ACConfig(DefenseConfig):
    """dims: reduced dimension. reduce: 'ica' or 'pca'. size_threshold: flag a class's
    smaller cluster when it holds less than this share of the class.
    detector_epochs_frac / retrain_epochs_frac: relative to the plain recipe's epochs."""

    dims: int = 10
    reduce: str = "ica"
    size_threshold: float = 0.35
    detector_epochs_frac: float = 1.0
    retrain_epochs_frac: float = 1.0


def two_means_split(x: np.ndarray, dims: int, reduce: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, D) activations of one class -> (in_small (n,) bool, margin (n,) float).

    margin = (distance to the larger centroid - distance to the smaller one) / distance
    between the centroids, in [-1, 1]; positive means closer to the smaller cluster.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA
    from sklearn.exceptions import ConvergenceWarning

    x = x - x.mean(0)
    k = min(dims, x.shape[0] - 1, x.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if reduce == "ica":
            z = FastICA(n_components=k, whiten="unit-variance", max_iter=500,
                        random_state=seed).fit_transform(x)
        else:
            z = PCA(n_components=k, random_state=seed).fit_transform(x)
        km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
    small = int(np.bincount(km.labels_, minlength=2).argmin())
    d = np.linalg.norm(z[:, None, :] - km.cluster_centers_[None], axis=2)  # (n, 2)
    gap = max(float(np.linalg.norm(km.cluster_centers_[0] - km.cluster_centers_[1])), 1e-12)
    return km.labels_ == small, (d[:, 1 - small] - d[:, small]) / gap


@DEFENSES.register("ac")
class ActivationClustering(Defense):
    """Flag small per-class activation clusters (2-means after ICA/PCA), retrain without them."""

    Config = ACConfig
    requires_clean_data = False
    needs_trained_model = False

    def validate(self) -> None:
        c = self.config
        if c.reduce not in ("ica", "pca"):
            raise ValueError(f"ac.reduce: expected 'ica' or 'pca', found {c.reduce!r}")
        if c.dims < 1:
            raise ValueError(f"ac.dims: expected an integer >= 1, found {c.dims!r}")
        check_fraction(self, "size_threshold")
        check_positive(self, "detector_epochs_frac", "retrain_epochs_frac")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        c = self.config

        def detect(feats, labels, num_classes):
            scores = torch.zeros(len(labels))
            flagged = torch.zeros(len(labels), dtype=torch.bool)
            sizes = {}
            for k, idx in enumerate(class_indices(labels, num_classes)):
                if len(idx) < 3:
                    continue
                small, margin = two_means_split(feats[idx].double().numpy(), c.dims, c.reduce,
                                                self.engine.seed)
                share = float(small.mean())
                sizes[k] = round(share, 4)
                scores[idx] = torch.from_numpy(margin).float()
                if share < c.size_threshold:
                    flagged[idx[torch.from_numpy(small)]] = True
            return scores, flagged, {"small_cluster_share": sizes}

        return detect_and_retrain(self, data, model, detect)

"""Shared fixtures: tiny learnable data, quiet engines, the real CIFAR-10 file when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from advrbd_plugin.engine import Engine, TrainConfig
from advrbd_plugin.types import PoisonedDataset

if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n N` workers share the cores: one thread each
    torch.set_num_threads(1)


def _shared_file(name: str) -> Path | None:
    roots = [os.environ.get("ADVRBD_DATA_DIR"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for root in roots:
        if root and (Path(root) / name).is_file():
            return Path(root) / name
    return None


@pytest.fixture
def cifar_subset_path() -> Path:
    p = _shared_file("cifar10_subset.npz")
    if p is None:
        pytest.skip("cifar10_subset.npz not found (set ADVRBD_DATA_DIR)")
    return p


def make_blobs(n: int = 200, classes: int = 4, size: int = 16, channels: int = 1,
               seed: int = 0) -> PoisonedDataset:
    """Learnable toy images: class k brightens horizontal band k (flip-invariant), plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randint(0, 60, (n, size, size, channels), generator=g)
    band = size // classes
    for k in range(classes):
        x[y == k, k * band:(k + 1) * band] += 150
    return PoisonedDataset(x.clamp(0, 255).to(torch.uint8), y, classes, mean=(0.4,) * channels,
                           std=(0.3,) * channels, name="blobs")


@pytest.fixture
def blobs() -> PoisonedDataset:
    return make_blobs()


@pytest.fixture
def engine() -> Engine:
    return Engine(device="cpu", quiet=True, seed=0)


@pytest.fixture
def tiny_train() -> TrainConfig:
    return TrainConfig(epochs=2, lr=0.05, batch_size=32, augment=False)

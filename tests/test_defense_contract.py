"""The contract every registered defense keeps, checked on tiny data with a tiny model."""
from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import torch

from advrbd_plugin.config import packaged_yaml
from advrbd_plugin.engine import Engine, TrainConfig
from advrbd_plugin.models import build_model
from advrbd_plugin.registry import DEFENSES
from advrbd_plugin.types import DefenseResult, GroundTruth, PoisonedDataset

N, K, SIZE = 200, 10, 12
BASELINES = ("finetuning", "fineprune", "cutmix", "clp", "dbr", "scanft", "abl", "spectral", "ac")


def _poisoned() -> PoisonedDataset:
    """Learnable 12x12 images (one bright square per class) with a BadNet-like 10% poison:
    a 2x2 white corner and label 0."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % K
    x = torch.randint(0, 60, (N, SIZE, SIZE, 1), generator=g)
    for k in range(K):
        r, c = divmod(k, 4)
        x[y == k, 3 * r:3 * r + 3, 3 * c:3 * c + 3] += 150
    poison = torch.zeros(N, dtype=torch.bool)
    poison[torch.randperm(N, generator=g)[:N // 10]] = True
    poison &= y != 0
    x[poison, -2:, -2:] = 255
    labels = torch.where(poison, torch.zeros_like(y), y)
    truth = GroundTruth(y, poison, torch.zeros(N, dtype=torch.bool), 0, "badnet")
    return PoisonedDataset(x.clamp(0, 255).to(torch.uint8), labels, K, mean=(0.3,), std=(0.3,),
                           truth=truth, name="tiny")


class SealedTruth(PoisonedDataset):
    """A dataset whose ground truth raises when read (defenses must never read it)."""

    @property
    def truth(self):
        if self._truth is not None:
            raise AssertionError("a defense read the ground truth")
        return None

    @truth.setter
    def truth(self, value):
        self._truth = value


def _sealed(data: PoisonedDataset) -> SealedTruth:
    out = SealedTruth(data.images, data.labels, data.num_classes, data.mean, data.std, None, data.name)
    out._truth = data.__dict__["truth"]
    return out


def _defense(name: str):
    return DEFENSES.get(name)(engine=Engine(device="cpu", quiet=True, seed=0),
                              train=TrainConfig(epochs=1, lr=0.05, batch_size=64))


def _model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model("resnet20", K, input_size=SIZE, in_channels=1)


def _check_result(r: DefenseResult, n: int) -> None:
    assert isinstance(r, DefenseResult)
    assert not r.model.training
    if r.scores is not None:
        assert r.scores.shape == (n,) and r.scores.is_floating_point()
        assert bool(torch.isfinite(r.scores).all())
    if r.poison_mask is not None:
        assert r.poison_mask.shape == (n,) and r.poison_mask.dtype == torch.bool
    if r.relabels is not None:
        assert r.relabels.shape == (n,) and r.relabels.dtype == torch.int64
        assert int(r.relabels.min()) >= -1 and int(r.relabels.max()) < K
    assert r.timings and all(v >= 0 for v in r.timings.values())
    json.dumps(r.to_dict())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads stall on barriers
    whenever another process holds a core (tens of seconds for a one-second fit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> PoisonedDataset:
    return _poisoned()


@pytest.fixture(scope="module")
def clean() -> PoisonedDataset:
    d = _poisoned()
    return d.subset(~d.truth.poison_mask).without_truth()


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_contract(name, data, clean):
    model = _model().train()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = data.images.clone(), data.labels.clone()
    r1 = _defense(name).apply(data, model, clean_set=clean)
    _check_result(r1, len(data))
    assert model.training, "apply must restore the input model's mode"
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
    assert data.truth is not None  # apply strips the truth from a copy, not from the input

    model.eval()
    r2 = _defense(name).apply(_sealed(data), model, clean_set=clean)
    assert not model.training
    for a, b in ((r1.poison_mask, r2.poison_mask), (r1.relabels, r2.relabels)):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b))
    assert (r1.scores is None) == (r2.scores is None)
    if r1.scores is not None:
        assert torch.allclose(r1.scores, r2.scores)
    probe = data.float_images()[:8]
    with torch.no_grad():
        x = (probe - 0.3) / 0.3
        assert torch.allclose(r1.model(x), r2.model(x), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in DEFENSES.names() if DEFENSES.get(n).requires_clean_data])
def test_clean_data_required(name, data):
    with pytest.raises(ValueError, match="requires reserved clean data"):
        _defense(name).apply(data, _model())


@pytest.mark.parametrize("name", DEFENSES.names())
def test_packaged_yaml_matches_config(name):
    """configs/defenses/<name>.yaml holds exactly the Config fields, with values of their type."""
    cls = DEFENSES.get(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    yaml_cfg = packaged_yaml(f"defenses/{name}.yaml")
    if fields and not yaml_cfg and name not in BASELINES:
        pytest.skip(f"{name} has no packaged YAML yet")
    if not fields:
        assert not yaml_cfg
        return
    assert set(yaml_cfg) == set(fields), f"{name}.yaml keys differ from {cls.Config.__name__}"
    hints = typing.get_type_hints(cls.Config)
    for key, value in yaml_cfg.items():
        assert value == getattr(cls.Config(), key), f"{name}.{key}: YAML and dataclass defaults differ"
        assert isinstance(value, (hints[key], int) if hints[key] is float else hints[key])


@pytest.mark.parametrize("name", [n for n in DEFENSES.names() if n != "none"])
def test_bad_knob_is_rejected(name):
    cls = DEFENSES.get(name)
    numeric = [f.name for f in dataclasses.fields(cls.Config)
               if typing.get_type_hints(cls.Config)[f.name] in (int, float)]
    if not numeric:
        pytest.skip("no numeric knob")
    with pytest.raises(ValueError, match=numeric[0]):
        cls({numeric[0]: -1})

"""The engine under torch.distributed (gloo, 2 CPU processes spawned here) against one process."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from advrbd_plugin.engine import Engine, TrainConfig, masked_kl_scores

# under `-n`, the tests that open local ports (DDP rendezvous, Ray) share one worker, so
# one cannot take the port another just picked
pytestmark = pytest.mark.xdist_group("ports")

WORLD = 2


class Tiny(nn.Module):
    """No BatchNorm: a DDP step then equals one process's step on the global batch (with
    BatchNorm, each rank normalizes with its own share's statistics)."""

    def __init__(self, channels: int = 1, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _data():
    from conftest import make_blobs

    return make_blobs(n=70, classes=4, size=12)


def _work(out: str) -> None:
    """What both the single process and every rank run; each writes its results."""
    ds = _data()
    eng = Engine(device="cpu", precision="fp32", quiet=True, seed=0, eval_batch=16)
    torch.manual_seed(0)
    model = Tiny()
    data = eng.data(ds)
    hist = eng.fit(model, data, ds.labels, TrainConfig(epochs=3, lr=0.05, batch_size=31))  # shares 15 + 16
    logits = eng.logits(model, data)
    kl = masked_kl_scores(eng, model, data, eps=0.03, radius=2, steps=1)
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    eng.fit(bn, data, ds.labels, TrainConfig(epochs=2, lr=0.05, batch_size=31))
    torch.save({"state": model.state_dict(), "logits": logits, "kl": kl, "hist": hist,
                "bn": bn.state_dict(), "bn_logits": eng.logits(bn, data),
                "world": eng.describe()["world_size"]}, out)


def _rank_main(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _work(os.path.join(folder, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(_free_port(), str(folder)), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    _work(str(folder / "single.pt"))
    load = lambda name: torch.load(folder / name, weights_only=False)  # noqa: E731 (our own files)
    return load("single.pt"), [load(f"rank{r}.pt") for r in range(WORLD)]


def test_ddp_fit_equals_one_process_on_the_global_batch(runs):
    single, ranks = runs
    assert [r["world"] for r in ranks] == [WORLD] * WORLD and single["world"] == 1
    for r in ranks:  # every rank holds the same weights, and they are one process's
        for k, v in single["state"].items():
            torch.testing.assert_close(r["state"][k], v, rtol=1e-4, atol=1e-5)
    assert [round(h["loss"], 4) for h in ranks[0]["hist"]] == \
        pytest.approx([round(h["loss"], 4) for h in single["hist"]], abs=1e-3)


def test_per_sample_passes_return_every_sample_once_in_order(runs):
    single, ranks = runs
    for r in ranks:
        assert r["logits"].shape == single["logits"].shape == (70, 4)
        torch.testing.assert_close(r["logits"], single["logits"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["kl"], single["kl"], rtol=1e-3, atol=1e-6)


def test_with_batchnorm_every_rank_holds_one_model(runs):
    """Per-rank BatchNorm statistics differ during training; after it, rank 0's are every
    rank's, so the round-robin passes all use one model."""
    _, ranks = runs
    for k, v in ranks[0]["bn"].items():
        assert torch.equal(ranks[1]["bn"][k], v), k
    assert torch.equal(ranks[0]["bn_logits"], ranks[1]["bn_logits"])


def _advrbd_rank(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import advrbd_plugin.defenses  # noqa: F401 (registers the defenses)
    from advrbd_plugin.models import build_model
    from advrbd_plugin.registry import ATTACKS, DEFENSES

    ds = ATTACKS.build("badnet", poison_ratio=0.1, target=0).poison(_data(), seed=0)
    eng = Engine(device="cpu", precision="fp32", quiet=True, seed=0, eval_batch=16)
    defense = DEFENSES.build("advrbd", engine=eng, train=TrainConfig(epochs=2, lr=0.05, batch_size=16))
    torch.manual_seed(0)
    result = defense.apply(ds, build_model("resnet20", 4, input_size=12, in_channels=1))
    torch.save({"mask": result.poison_mask, "state": result.model.state_dict()},
               os.path.join(folder, f"advrbd{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_advrbd_under_ddp_ranks_agree_on_split_and_model(tmp_path):
    if not torch.distributed.is_gloo_available():
        pytest.skip("gloo is not available in this torch build")
    mp.spawn(_advrbd_rank, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"advrbd{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["mask"].shape == (70,) and torch.equal(r0["mask"], r1["mask"])
    for k, v in r0["state"].items():
        assert torch.equal(r1["state"][k], v), k

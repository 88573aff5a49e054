"""AdvrBD specifics: stage outputs, resume after an interruption, config errors, and an
end-to-end run on digits that must lower a BadNet backdoor's ASR."""
from __future__ import annotations

import pytest
import torch

from advrbd_plugin import runner
from advrbd_plugin.defenses.advrbd import AdvrBD, _top_per_class
from advrbd_plugin.engine import Engine, TrainConfig
from test_defense_contract import K, _model, _poisoned

STAGES = ("warmup", "partition", "enhance", "clean", "relearn")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _advrbd(checkpoint_dir=None, epochs=2, **knobs) -> AdvrBD:
    return AdvrBD(knobs, engine=Engine(device="cpu", quiet=True, seed=0),
                  train=TrainConfig(epochs=epochs, lr=0.05, batch_size=32), checkpoint_dir=checkpoint_dir)


def test_every_stage_runs_and_reports():
    data = _poisoned()
    rounds = 3
    r = _advrbd(rounds=rounds).apply(data, _model(), monitor=lambda m: {"acc": 0.5})
    n = len(data)
    assert set(STAGES) <= set(r.timings)
    kl = r.arrays["kl"]
    scored = ~kl.isnan()
    assert kl.shape == (n,) and bool((kl[scored] >= 0).all())
    assert abs(int(scored.sum()) - n // 2) <= K, "score_frac 0.5 of each class is scored"
    seed, unlearned = r.arrays["seed"], r.arrays["unlearned"]
    assert bool(scored[seed].all()), "the seed comes from the scored samples"
    assert seed.dtype == torch.bool and bool((unlearned | ~seed).all()), "the seed stays unlearned"
    assert int(unlearned.sum()) > int(seed.sum()), "D_c grows over the rounds"
    assert [row["round"] for row in r.history["enhance"]] == list(range(1, rounds + 1))
    assert all("acc" in row for row in r.history["enhance"])
    flagged = r.poison_mask
    assert flagged.shape == (n,) and flagged.dtype == torch.bool
    assert r.extra["flagged"] == int(flagged.sum())
    moved = r.relabels >= 0
    assert bool((flagged | ~moved).all()), "only flagged samples are relabeled"
    assert bool((r.relabels[moved] != data.labels[moved]).all()), "a relabel changes the label"
    assert sum(r.extra["clean_part_per_class"]) == n - int(flagged.sum())


def test_relabel_off_skips_relearning():
    r = _advrbd(relabel=False).apply(_poisoned(), _model())
    assert "relearn" not in r.timings and "relearn" not in r.history
    assert int((r.relabels >= 0).sum()) == 0


def test_self_relearn_joins_flagged_samples_mid_training():
    data = _poisoned()
    r = _advrbd(epochs=4, relearn="self", relabel_start=0.5).apply(data, _model())
    assert "relearn" not in r.timings, "self: relabel and relearn happen inside the clean stage"
    rows = r.history["clean"]
    late = [row for row in rows if "relabeled" in row]
    assert late and "relabeled" not in rows[0], "flagged samples join after relabel_start"
    assert late[-1]["relabeled"] == int((r.relabels >= 0).sum())
    moved = r.relabels >= 0
    assert bool((r.poison_mask | ~moved).all()), "only flagged samples are relabeled"
    off = _advrbd(epochs=4, relearn="self", relabel=False).apply(data, _model())
    assert int((off.relabels >= 0).sum()) == 0
    assert not any("relabeled" in row for row in off.history["clean"])


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    data = _poisoned()
    full = _advrbd(tmp_path / "full").apply(data, _model())

    real_fit = Engine.fit

    def crash_in_clean(self, *a, desc="", **kw):
        if desc == "advrbd clean":
            raise KeyboardInterrupt("simulated interruption")
        return real_fit(self, *a, desc=desc, **kw)

    monkeypatch.setattr(Engine, "fit", crash_in_clean)
    with pytest.raises(KeyboardInterrupt):
        _advrbd(tmp_path / "resumed").apply(data, _model())
    saved = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert saved == ["stage_enhance.pt", "stage_partition.pt", "stage_warmup.pt"]
    monkeypatch.setattr(Engine, "fit", real_fit)
    resumed = _advrbd(tmp_path / "resumed").apply(data, _model())
    assert torch.equal(full.poison_mask, resumed.poison_mask)
    assert torch.equal(full.relabels, resumed.relabels)
    torch.testing.assert_close(full.arrays["kl"], resumed.arrays["kl"], rtol=0, atol=0, equal_nan=True)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize("knobs, match", [
    ({"seed_frac": 1.5}, "seed_frac"),
    ({"eps": 2.0}, "eps"),
    ({"detector": "oracle"}, "detector"),
    ({"pgd_steps": 0}, "pgd_steps"),
    ({"relabel_start": 1.0}, "relabel_start"),
    ({"relabel_start": -0.1}, "relabel_start"),
    ({"clean_epochs_frac": 0.0}, "clean_epochs_frac"),
    ({"relearn_epochs_frac": 0.0}, "relabel"),
    ({"relearn": "twice"}, "relearn"),
    ({"seed_fraction": 0.1}, "seed_frac"),  # unknown key: the error names the closest one
])
def test_invalid_config(knobs, match):
    with pytest.raises(ValueError, match=match):
        _advrbd(**knobs)


def test_top_per_class_is_class_balanced():
    labels = torch.tensor([0] * 10 + [1] * 20)
    score = torch.arange(30.0)
    pick = _top_per_class(score, labels, 2, 0.2, torch.zeros(30, dtype=torch.bool))
    assert torch.nonzero(pick).flatten().tolist() == [8, 9, 26, 27, 28, 29]
    again = _top_per_class(score, labels, 2, 0.2, pick)
    assert torch.nonzero(again).flatten().tolist() == [6, 7, 22, 23, 24, 25]


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """No defense and AdvrBD end to end through the runner on the embedded digits data (the
    README quickstart's 12-epoch recipe; about 45 s each on one core)."""
    kw = dict(dataset="digits", attack="badnet", seed=0, quiet=True, sets=["train.epochs=12"],
              out=str(tmp_path_factory.mktemp("digits")))
    return runner.run(defense="none", **kw), runner.run(defense="advrbd", **kw)


def test_digits_badnet_advrbd_lowers_asr(digits_runs):
    none, ours = digits_runs
    # 12 epochs learn the backdoor to 48-81% ASR depending on thread count (chance: 10%)
    assert none["asr"] > 0.3, f"the backdoor must be learned first (ASR {none['asr']:.2f})"
    assert ours["asr"] < none["asr"] / 2, (none["asr"], ours["asr"])


@pytest.mark.xfail(strict=False, reason="known miss of the ACC target, reported in docs/advrbd.md: "
                   "at one thread AdvrBD lost 5.8 points on an AMX CPU and 10.8 points on an "
                   "AVX-512 CPU without AMX (bf16 rounding differs)")
def test_digits_badnet_advrbd_keeps_accuracy(digits_runs):
    none, ours = digits_runs
    assert ours["acc"] > none["acc"] - 0.1, (none["acc"], ours["acc"])

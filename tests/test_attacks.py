"""Attacks: counts, masks, labels, determinism, trigger placement, config errors, extension."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch

from advrbd_plugin import ATTACKS, PoisonedDataset
from advrbd_plugin.attacks import (Attack, AttackConfig, AttackConfigError, attack_defaults,
                                   save_attack_grid)

NAMES = ["badnet", "blend", "sig", "wanet", "physicalba", "tact", "adaptive_blend",
         "adaptive_patch"]
WITH_COVERS = {"wanet", "tact", "adaptive_blend", "adaptive_patch"}
TARGET, SOURCE = 1, 0


def make_data(n=200, size=32, channels=3, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, size, size, channels), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % classes
    stats = (0.5,) * channels
    return PoisonedDataset(x, y, classes, mean=stats, std=stats)


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def small():
    return make_data(size=16, channels=1)


def expected_counts(name, n):
    n_poison = round(0.05 * n)
    if name == "wanet":
        return n_poison, 2 * n_poison
    return n_poison, round(0.01 * n) if name in WITH_COVERS else 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("which", ["data", "small"])
def test_poison_counts_labels_and_clean_samples(name, which, request):
    ds = request.getfixturevalue(which)
    out = ATTACKS.build(name).poison(ds, seed=0)
    t = out.truth
    n_poison, n_cover = expected_counts(name, len(ds))
    assert int(t.poison_mask.sum()) == n_poison
    assert int(t.cover_mask.sum()) == n_cover
    assert not bool((t.poison_mask & t.cover_mask).any())
    assert t.target == TARGET and t.attack == name
    assert torch.equal(t.true_labels, ds.labels)
    assert out.images.dtype == torch.uint8 and out.images.shape == ds.images.shape

    clean = ~(t.poison_mask | t.cover_mask)
    assert torch.equal(out.images[clean], ds.images[clean])  # byte-identical
    assert torch.equal(out.labels[clean], ds.labels[clean])
    assert bool((out.labels[t.poison_mask] == TARGET).all())
    assert torch.equal(out.labels[t.cover_mask], ds.labels[t.cover_mask])
    assert bool((out.labels[t.cover_mask] != TARGET).all())
    triggered = t.poison_mask | t.cover_mask
    changed = (out.images[triggered].int() - ds.images[triggered].int()).abs().flatten(1).amax(1)
    assert bool((changed > 0).all())

    if name == "sig":
        assert bool((ds.labels[t.poison_mask] == TARGET).all())
    elif name == "tact":
        assert bool((ds.labels[t.poison_mask] == SOURCE).all())
        covers = ds.labels[t.cover_mask]
        assert not bool(((covers == SOURCE) | (covers == TARGET)).any())
    else:
        assert bool((ds.labels[t.poison_mask] != TARGET).all())


def test_badnet_changes_only_the_corner(data):
    out = ATTACKS.build("badnet").poison(data)
    diff = out.images.int() != data.images.int()
    assert not bool(diff[:, :29].any()) and not bool(diff[:, :, :29].any())
    assert bool((out.images[out.truth.poison_mask][:, 29:, 29:] == 255).all())


@pytest.mark.parametrize("size,rows", [(8, [7]), (16, [14, 15]), (64, list(range(58, 64)))])
def test_badnet_square_scales_with_the_image(size, rows):
    ds = make_data(n=40, size=size, channels=1)
    out = ATTACKS.build("badnet", poison_ratio=0.25).poison(ds)
    changed = (out.images != ds.images).any(0)[..., 0]
    assert changed.nonzero()[:, 0].unique().tolist() == rows


def test_float_input_gives_float_output(data):
    ds = dataclasses.replace(data, images=data.float_images(), truth=None)
    out = ATTACKS.build("blend").poison(ds)
    assert out.images.dtype == torch.float32 and out.images.shape == ds.images.shape
    clean = ~out.truth.poison_mask
    assert torch.equal(out.images[clean], ds.images[clean])


@pytest.mark.parametrize("name", NAMES)
def test_seed_determinism(name, data):
    attack = ATTACKS.build(name)
    a, b, c = attack.poison(data, seed=0), attack.poison(data, seed=0), attack.poison(data, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.truth.poison_mask, b.truth.poison_mask)
    assert torch.equal(a.truth.cover_mask, b.truth.cover_mask)
    assert not torch.equal(a.truth.poison_mask, c.truth.poison_mask)


@pytest.mark.parametrize("name", NAMES)
def test_triggered_test_set(name, data):
    attack = ATTACKS.build(name)
    ts = attack.triggered_test_set(data.images, data.labels)
    want = data.labels == SOURCE if name == "tact" else data.labels != TARGET
    assert len(ts) == int(want.sum())
    assert torch.equal(ts.true_labels, data.labels[want])
    assert bool((ts.target_labels == TARGET).all())
    assert ts.images.dtype == torch.uint8
    changed = (ts.images.int() - data.images[want].int()).abs().flatten(1).amax(1)
    assert bool((changed > 0).all())  # every selected sample carries the trigger
    assert ts.attack == name


@pytest.mark.parametrize("name", ["adaptive_blend", "adaptive_patch"])
def test_adaptive_test_trigger_differs_from_train(name, data):
    attack = ATTACKS.build(name)
    x = data.float_images()[:20]
    gen = torch.Generator().manual_seed(0)
    assert not torch.allclose(attack.train_trigger(x, gen), attack.test_trigger(x, gen))


def test_adaptive_blend_keeps_half_the_pieces():
    attack = ATTACKS.build("adaptive_blend")
    masks = attack.piece_masks(50, 32, 32, torch.Generator().manual_seed(0))
    assert masks.shape == (50, 1, 32, 32)
    assert torch.equal(masks.mean((1, 2, 3)), torch.full((50,), 0.5))
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 1  # random per sample


def test_wanet_uses_a_fixed_field_per_trigger_seed():
    w = ATTACKS.build("wanet")
    assert torch.equal(w.warp_grid(16, 16), w.warp_grid(16, 16))
    other = ATTACKS.build("wanet", trigger_seed=1)
    assert not torch.equal(w.warp_grid(16, 16), other.warp_grid(16, 16))


def test_none_attack(data):
    attack = ATTACKS.build("none")
    out = attack.poison(data)
    assert torch.equal(out.images, data.images) and torch.equal(out.labels, data.labels)
    assert not bool(out.truth.poison_mask.any()) and not bool(out.truth.cover_mask.any())
    assert out.truth.target is None
    assert attack.triggered_test_set(data.images, data.labels) is None


def test_already_poisoned_input_is_rejected(data):
    poisoned = ATTACKS.build("badnet").poison(data)
    with pytest.raises(ValueError, match="already poisoned"):
        ATTACKS.build("blend").poison(poisoned)


# -- bad configs -------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval(ratio):
    with pytest.raises(AttackConfigError, match="poison_ratio"):
        ATTACKS.build("badnet", poison_ratio=ratio)


def test_target_out_of_range(data):
    attack = ATTACKS.build("badnet", target=10)
    with pytest.raises(ValueError, match="target 10 is out of range"):
        attack.poison(data)
    with pytest.raises(ValueError, match="out of range"):
        attack.triggered_test_set(data.images, data.labels, num_classes=10)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(AttackConfigError, match=r"unknown config key.*alpah.*'alpha'.*Valid keys"):
        ATTACKS.build("blend", alpah=0.3)


def test_config_dict_and_overrides_merge():
    attack = ATTACKS.build("blend", {"alpha": 0.3, "target": 2}, target=3)
    assert (attack.config.alpha, attack.config.target, attack.config.poison_ratio) == (0.3, 3, 0.05)
    assert ATTACKS.build("sig", delta=30).config.delta == 30.0  # ints accepted as floats


@pytest.mark.parametrize("name", ["tact", "adaptive_patch"])
def test_patches_keep_their_structure_when_scaled_down(name):
    attack = ATTACKS.build(name)
    x = torch.full((1, 1, 16, 16), 0.5)
    gen = torch.Generator().manual_seed(0)
    stamped = attack.test_trigger(x, gen)[0, 0]
    patch = stamped[stamped != 0.5]
    assert bool((patch == 0).any()) and bool((patch == 1).any())  # not a plain square


def test_wrong_type():
    with pytest.raises(AttackConfigError, match="target: expected int"):
        ATTACKS.build("badnet", target="one")


@pytest.mark.parametrize("name", ["blend", "adaptive_blend"])
def test_trigger_file_missing(name, tmp_path):
    with pytest.raises(AttackConfigError, match="does not exist"):
        ATTACKS.build(name, trigger=str(tmp_path / "nope.png"))


@pytest.mark.parametrize("name", ["blend", "adaptive_blend"])
def test_trigger_file_undecodable(name, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(AttackConfigError, match="cannot decode|cv2 can"):
        ATTACKS.build(name, trigger=str(bad))


def test_trigger_file_is_resized_and_used(data, small, tmp_path):
    path = tmp_path / "t.png"
    img = np.zeros((50, 70, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    cv2.imwrite(str(path), img)
    attack = ATTACKS.build("blend", trigger=str(path), alpha=1.0)
    out = attack.poison(data)
    px = out.images[out.truth.poison_mask]
    assert bool((px[..., 0] == 255).all()) and bool((px[..., 1:] == 0).all())
    assert attack.poison(small).images.shape == small.images.shape


def test_tact_source_equal_target():
    with pytest.raises(AttackConfigError, match="source and target"):
        ATTACKS.build("tact", source=1, target=1)


def test_tact_poison_count_above_source_class(data):
    with pytest.raises(ValueError, match="source-class samples"):
        ATTACKS.build("tact", poison_ratio=0.2).poison(data)


def test_sig_ratio_above_target_share(data):
    with pytest.raises(ValueError, match=r"only 20 are eligible.*target-class.*at most 0.1"):
        ATTACKS.build("sig", poison_ratio=0.15).poison(data)


# -- defaults, extension, grid -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES + ["none"])
def test_yaml_defaults_match_dataclass(name):
    assert attack_defaults(name) == dataclasses.asdict(ATTACKS.get(name).Config())


@dataclass
class CornerDotConfig(AttackConfig):
    value: float = 1.0


class CornerDot(Attack):
    """A user attack: one pixel at the top-left corner."""

    Config = CornerDotConfig

    def train_trigger(self, x, gen):
        x = x.clone()
        x[:, :, 0, 0] = self.config.value
        return x


def test_user_defined_attack(data):
    ATTACKS.register("test_corner_dot")(CornerDot)
    try:
        attack = ATTACKS.build("test_corner_dot", value=0.0, poison_ratio=0.1)
        out = attack.poison(data, seed=3)
        assert int(out.truth.poison_mask.sum()) == 20 and out.truth.attack == "test_corner_dot"
        assert bool((out.images[out.truth.poison_mask][:, 0, 0] == 0).all())
        defaults = attack_defaults("test_corner_dot")
        assert defaults == {"poison_ratio": 0.05, "target": 1, "value": 1.0}
        assert len(attack.triggered_test_set(data.images, data.labels)) == 180
    finally:
        ATTACKS.unregister("test_corner_dot")


@pytest.mark.parametrize("which", ["data", "small"])
def test_save_attack_grid(which, request, tmp_path):
    ds = request.getfixturevalue(which)
    path = tmp_path / "grid.png"
    save_attack_grid(ATTACKS.build("adaptive_patch"), ds, str(path), n=4)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] >= 4 * 128 and img.shape[1] >= 4 * 128
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]

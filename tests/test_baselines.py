"""Unit checks of the baseline defenses' math on synthetic inputs (no training)."""
from __future__ import annotations

import pytest
import torch

from advrbd_plugin.defenses.abl import lga_loss
from advrbd_plugin.defenses.ac import two_means_split
from advrbd_plugin.defenses.clp import channel_lipschitz, conv_bn_pairs, prune
from advrbd_plugin.defenses.cutmix import CutMix
from advrbd_plugin.defenses.dbr import random_transform
from advrbd_plugin.defenses.fineprune import prune_order
from advrbd_plugin.defenses.scanft import scan
from advrbd_plugin.defenses.spectral import spectral_scores
from advrbd_plugin.models import build_model


def test_clp_prunes_an_abnormally_large_channel():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, input_size=16, in_channels=3).eval()
    pairs = conv_bn_pairs(model)
    assert len(pairs) == 19  # stem + 9 blocks x 2 convs, each followed by its BN
    name, conv, bn = pairs[7]
    with torch.no_grad():
        conv.weight[5] *= 50
    lips = channel_lipschitz(conv, bn)
    assert int(lips.argmax()) == 5
    pruned = prune(model, u=3.0)
    assert pruned[name] == 1
    weight, bias = bn.weight.detach(), bn.bias.detach()
    assert float(weight[5]) == 0 and float(bias[5]) == 0
    assert bool((weight[torch.arange(len(lips)) != 5] != 0).all())


def test_spectral_flags_planted_outliers():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(200, 20, generator=g)
    direction = torch.nn.functional.normalize(torch.randn(20, generator=g), dim=0)
    poison = torch.randn(15, 20, generator=g) * 0.3 + 6 * direction
    feats = torch.cat([clean, poison, torch.randn(100, 20, generator=g)])
    labels = torch.cat([torch.zeros(215), torch.ones(100)]).long()
    scores, flagged = spectral_scores(feats, labels, 2, remove=1.5 * 0.05)
    assert bool(flagged[200:215].all())
    assert int(flagged[:215].sum()) == 17 and int(flagged[215:].sum()) == 8  # ceil(0.075 n)
    assert float(scores[200:215].min()) > float(scores[:200].max())


@pytest.mark.parametrize("reduce", ["ica", "pca"])
def test_ac_splits_a_two_cluster_class(reduce):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 32, generator=g, dtype=torch.float64)  # ICA needs a few hundred
    x[320:] += 5.0
    small, margin = two_means_split(x.numpy(), dims=10, reduce=reduce, seed=0)
    assert small[320:].all() and not small[:320].any()
    assert (margin[320:] > 0).all() and (margin[:320] < 0).all() and abs(margin).max() <= 1 + 1e-9


def test_scan_flags_a_mixed_class():
    g = torch.Generator().manual_seed(0)
    k, d, per = 6, 16, 120
    identity = torch.randn(k, d, generator=g) * 3
    labels = torch.arange(k).repeat_interleave(per)
    feats = identity[labels] + torch.randn(k * per, d, generator=g)
    poison = torch.zeros(k * per, dtype=torch.bool)
    poison[2 * per:2 * per + 35] = True  # class 2: 35 samples carry another identity
    feats[poison] = identity[4] + 4 + torch.randn(35, d, generator=g)
    scores, flagged, jstar = scan(feats, labels, k, threshold=7.389)
    assert int(jstar.argmax()) == 2 and float(jstar[2]) > 7.389
    assert bool((jstar[torch.arange(k) != 2] < 7.389).all())
    assert torch.equal(flagged, poison)
    assert float(scores[poison].min()) > float(scores[~poison].max())


def test_abl_lga_loss():
    loss = torch.tensor([0.2, 0.5, 1.5], requires_grad=True)
    out = lga_loss(loss, gamma=0.5)
    assert torch.equal(out.detach(), torch.tensor([-0.2, 0.0, 1.5]))
    out.sum().backward()
    assert torch.equal(loss.grad, torch.tensor([-1.0, 0.0, 1.0]))  # ascent below gamma


def test_cutmix_mixes_labels_by_area():
    b, h, w = 8, 16, 12
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 2, h, w).contiguous()
    y = torch.arange(b)
    gen = torch.Generator().manual_seed(3)
    mixed, targets = CutMix(10, prob=1.0, beta=1.0)(x, y, gen)
    assert not torch.equal(mixed, x) and torch.equal(x[:, 0, 0, 0], torch.arange(b).float())
    for i in range(b):
        share = torch.bincount(mixed[i, 0].flatten().long(), minlength=10).float() / (h * w)
        assert torch.allclose(targets[i], share), i  # label weight = pixel share of each source
    assert torch.allclose(targets.sum(1), torch.ones(b))
    same, onehot = CutMix(10, prob=0.0)(x, y, gen)
    assert same is x and torch.equal(onehot, torch.nn.functional.one_hot(y, 10).float())


def test_fineprune_stops_before_the_accuracy_drop():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(100) % 2
    feats = torch.zeros(100, 4)
    feats[:, 0] = labels.float() * 2 + 0.1 * torch.rand(100, generator=g)  # the useful channel
    feats[:, 1] = 1.0  # same weight in both classes: pruning it costs nothing
    weight = torch.tensor([[-1.0, 0.3, 0.0, 0.0], [1.0, 0.3, 0.0, 0.0]])
    bias = torch.tensor([1.0, -1.0])
    mask, curve = prune_order(feats, labels, weight, bias, acc_drop=0.1, max_ratio=1.0)
    assert mask.tolist() == [True, False, False, False]  # 2 and 3 are dead, then 1, then stop
    assert curve[0] == 1.0 and len(curve) == 4


def test_dbr_transforms_keep_shape_and_range():
    x = torch.rand(4, 3, 10, 10)
    gen = torch.Generator().manual_seed(0)
    for kind in ("rotate", "affine"):
        out = random_transform(x, kind, gen)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert not torch.allclose(out, x)

"""Model zoo: shapes, the feature/head contract, registry, BackdoorBench key compatibility."""
import pytest
import torch
from torch import nn

from advrbd_plugin.models import build_model
from advrbd_plugin.registry import MODELS, UnknownNameError

NAMES = ["mobilenet_v2", "preactresnet18", "resnet18", "resnet20", "resnet34", "resnet9"]
CONFIGS = [(10, 32, 3), (10, 16, 1), (200, 64, 3), (10, 8, 1)]


def test_registry_lists_all_models():
    assert set(NAMES) <= set(MODELS.names())


def test_unknown_model_name_suggests_close_match():
    with pytest.raises(UnknownNameError, match="resnet18"):
        build_model("resnet-18", 10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes,size,channels", CONFIGS)
def test_forward_and_features(name, num_classes, size, channels):
    torch.manual_seed(0)
    model = build_model(name, num_classes, input_size=size, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        head = model.get_classifier()
        assert isinstance(head, nn.Linear)
        torch.testing.assert_close(head(feats), logits)
    assert logits.shape == (2, num_classes)
    assert feats.shape == (2, model.feature_dim)


@pytest.mark.parametrize("name", NAMES)
def test_train_step_backward(name):
    model = build_model(name, 3, input_size=8, in_channels=1)
    loss = model(torch.randn(4, 1, 8, 8)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in NAMES if n != "preactresnet18"])
def test_every_conv_is_followed_by_its_batchnorm(name):
    modules = [m for m in build_model(name, 10).modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    for i, m in enumerate(modules):
        if isinstance(m, nn.Conv2d):
            nxt = modules[i + 1]
            assert isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels


@pytest.mark.parametrize("args", [dict(num_classes=0), dict(input_size=4), dict(in_channels=0),
                                  dict(num_classes=2.5)])
def test_bad_arguments_are_rejected(args):
    kwargs = dict(num_classes=10, input_size=32, in_channels=3) | args
    with pytest.raises(ValueError, match="expected"):
        build_model("resnet20", **kwargs)


def test_resnet9_width():
    model = build_model("resnet9", 10, width=16)
    assert model.feature_dim == 128
    with pytest.raises(ValueError, match="width"):
        build_model("resnet9", 10, width=0)


def test_resnet20_is_option_a():
    model = build_model("resnet20", 10)
    assert sum(p.numel() for p in model.parameters()) == 269_722
    assert not any(m.kernel_size == (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))


def _backdoorbench_preact18_keys():
    """Keys of BackdoorBench models/preact_resnet.py PreActResNet18, in registration order,
    as read from that file: conv1; per block bn1, conv1, bn2, conv2 and, where the
    stride or width changes, shortcut.0 (a bias-free 1x1 conv); avgpool has none; linear."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"]
    for layer in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"layer{layer}.{block}."
            keys += [p + "bn1." + k for k in bn] + [p + "conv1.weight"]
            keys += [p + "bn2." + k for k in bn] + [p + "conv2.weight"]
            if layer > 1 and block == 0:
                keys.append(p + "shortcut.0.weight")
    return keys + ["linear.weight", "linear.bias"]


def test_preactresnet18_state_dict_matches_backdoorbench():
    model = build_model("preactresnet18", 10)
    sd = model.state_dict()
    assert list(sd) == _backdoorbench_preact18_keys()
    assert sd["conv1.weight"].shape == (64, 3, 3, 3)
    assert sd["layer2.0.shortcut.0.weight"].shape == (128, 64, 1, 1)
    assert sd["linear.weight"].shape == (10, 512)
    model.load_state_dict(sd, strict=True)


def test_preactresnet18_features_are_plain_average_of_last_block():
    """BackdoorBench applies no BN/ReLU after layer4: features = spatial mean of its output."""
    model = build_model("preactresnet18", 10).eval()
    out = {}
    model.layer4.register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
    assert out["y"].shape[-2:] == (4, 4)
    torch.testing.assert_close(feats, out["y"].mean((2, 3)))

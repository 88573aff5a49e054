"""Channel Lipschitzness-based Pruning, CLP (Zheng et al., "Data-Free Backdoor Removal Based
on Channel Lipschitzness", ECCV 2022).

Data: the already-trained (backdoored) model only; data-free. For every convolution followed
by a BatchNorm, channel k's upper bound of the channel Lipschitz constant (UCLC) is the
spectral norm of its BN-scaled kernel, (gamma_k / sigma_k) * W_k reshaped to
(in_channels, kh * kw). Channels whose UCLC exceeds mean + u * std of their layer are
pruned (BN weight and bias set to 0): trigger-sensitive channels have an abnormally large
Lipschitz constant. Zheng et al. do not fine-tune afterwards, and neither do we.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..registry import DEFENSES
from ..types import DefenseResult
from ._shared import check_positive
from .base import Defense, DefenseConfig

__all__ = ["CLP", "CLPConfig", "conv_bn_pairs", "channel_lipschitz"]


@dataclass
class CLPConfig(DefenseConfig):
    """u: prune channels whose UCLC exceeds the layer's mean + u * std (Zheng et al.: 3)."""

    u: float = 3.0


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """(BN name, conv, BN) for every BatchNorm2d that follows a Conv2d in module order with
    as many features as the conv has output channels."""
    pairs, conv = [], None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            conv = m
        elif isinstance(m, nn.BatchNorm2d) and conv is not None and conv.out_channels == m.num_features:
            pairs.append((name, conv, m))
            conv = None
    return pairs


def channel_lipschitz(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """(out_channels,) UCLC: spectral norm of each BN-scaled output-channel kernel."""
    w = conv.weight.detach().float()
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    w = w * scale.view(-1, 1, 1, 1)
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], w.shape[1], -1), ord=2)


@DEFENSES.register("clp")
class CLP(Defense):
    """Data-free pruning of channels with an abnormally large Lipschitz upper bound."""

    Config = CLPConfig
    requires_clean_data = False
    needs_trained_model = True

    def validate(self) -> None:
        check_positive(self, "u")

    def run(self, data, model, *, clean_set, monitor) -> DefenseResult:
        pruned = self.timed("prune", lambda: prune(model, self.config.u))
        if not pruned:
            raise TypeError(f"clp: {type(model).__name__} has no Conv2d -> BatchNorm2d pair to prune")
        return DefenseResult(model=model, extra={"pruned_channels": sum(pruned.values()),
                                                 "pruned_per_layer": pruned})


@torch.no_grad()
def prune(model: nn.Module, u: float) -> dict[str, int]:
    """Zero the BN weight and bias of every channel with UCLC > mean + u * std of its
    layer, in place; returns BN name -> number of channels pruned."""
    out = {}
    for name, conv, bn in conv_bn_pairs(model):
        lips = channel_lipschitz(conv, bn)
        index = lips > lips.mean() + u * lips.std()
        bn.weight[index] = 0
        bn.bias[index] = 0
        out[name] = int(index.sum())
    return out

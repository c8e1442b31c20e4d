"""Network parts every method shares: a torchvision ResNet trunk (dense C5, or C2-C5 stage by stage), the
BYOL/DetCon MLP head, and the momentum (EMA) updates of a target network.

The trunk keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so its state_dict is
a torchvision ``resnet*`` state_dict without ``fc`` (``checkpoint.export_backbone`` adds torchvision's freshly
initialised ``fc`` so the file loads with ``strict=True``).
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor, nn


class ResNetTrunk(nn.Module):
    """torchvision ResNet up to ``layer4`` (``weights=None``): (N, 3, S, S) → (N, C, S/32, S/32) C5 features."""

    def __init__(self, name: str = "resnet50", zero_init_residual: bool = False) -> None:
        super().__init__()
        # zero_init_residual: the last BatchNorm of every residual block (bn3 / bn2) starts with γ = 0, so each
        # block starts as the identity (Goyal et al. 2017; haiku's BlockV1 and SoCo's contrast/resnet.py do it)
        net = getattr(torchvision.models, name)(weights=None, zero_init_residual=zero_init_residual)
        self.name = name
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = int(net.fc.in_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """DetCon/BYOL head: Linear(in→hidden) → BatchNorm1d → ReLU → Linear(hidden→out)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


def stage_channels(trunk: ResNetTrunk) -> list[int]:
    """Channels of C2..C5 (``layer1``..``layer4``): [64, 128, 256, 512] for ResNet-18, [256, ..., 2048] for 50."""
    c5 = trunk.out_channels
    return [c5 // 8, c5 // 4, c5 // 2, c5]


def stage_features(trunk: ResNetTrunk, x: Tensor) -> list[Tensor]:
    """[C2, C3, C4, C5] of (N, 3, S, S) images: (N, C_i, S / 2^(i+1), S / 2^(i+1)) for i = 2..5 (strides 4..32)."""
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    out = []
    for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        x = layer(x)
        out.append(x)
    return out


def cosine_momentum(step: int, total: int, base: float) -> float:
    """EMA momentum at ``step`` of ``total``: ``base`` at 0, rising to 1 on a half cosine."""
    if total <= 0:
        return 1.0
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / total) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target ← m target + (1 - m) online`` for every target parameter (matched by name); buffers copied."""
    params = dict(online.named_parameters())
    pairs = [(p, params[name]) for name, p in target.named_parameters()]
    targets = [p for p, _ in pairs]
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, [q.detach() for _, q in pairs], alpha=1.0 - momentum)
    buffers = dict(online.named_buffers())
    for name, buf in target.named_buffers():
        buf.copy_(buffers[name])

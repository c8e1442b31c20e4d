"""Networks: a torchvision ResNet trunk giving the dense C5 map, DetCon's MLP heads, and mask pooling.

The trunk keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so its state_dict is
a torchvision ``resnet*`` state_dict without ``fc`` (``checkpoint.export_backbone`` adds torchvision's freshly
initialised ``fc`` so the file loads with ``strict=True``).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn


class ResNetTrunk(nn.Module):
    """torchvision ResNet up to ``layer4`` (``weights=None``): (N, 3, S, S) → (N, C, S/32, S/32) C5 features."""

    def __init__(self, name: str = "resnet50") -> None:
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
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


def grid_masks(grids: Tensor, ids: Tensor) -> Tensor:
    """(N, K, G*G) float masks: cell c of image n is in mask k when ``grids[n].flatten()[c] == ids[n, k]``.

    Args:
        grids: (N, G, G) integer majority segment ids of the feature cells.
        ids: (N, K) integer sampled ids (each present on its grid).
    """
    return (grids.flatten(1)[:, None, :] == ids[:, :, None]).to(torch.float32)


def mask_pool(features: Tensor, masks: Tensor) -> Tensor:
    """(N, K, C) mean of the C5 features over each mask's cells.

    Args:
        features: (N, C, G, G) float feature map.
        masks: (N, K, G*G) float binary masks (an empty mask pools to zeros).
    """
    area = masks.sum(-1, keepdim=True).clamp(min=1.0)
    flat = features.flatten(2).transpose(1, 2)  # (N, G*G, C)
    return torch.bmm((masks / area).to(flat.dtype), flat)


class DetConNet(nn.Module):
    """Trunk → mask pooling → projector (→ predictor for the online DetCon-B branch).

    ``forward(images, grids, ids)`` with images (N, 3, S, S) float, grids (N, G, G) and ids (N, K) integer
    returns ``(projections, predictions)``, each (N, K, proj_dim) float32; predictions is None without a
    predictor. The heads see the N·K pooled vectors as one batch (BatchNorm over all of them).
    """

    def __init__(self, backbone: str, proj_hidden: int, proj_dim: int, pred_hidden: int | None) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone)
        self.projector = mlp(self.backbone.out_channels, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim) if pred_hidden else None

    def forward(self, images: Tensor, grids: Tensor, ids: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.backbone(images)
        pooled = mask_pool(features, grid_masks(grids, ids))
        n, k, c = pooled.shape
        proj = self.projector(pooled.reshape(n * k, c))
        pred = self.predictor(proj) if self.predictor is not None else None
        proj = proj.reshape(n, k, -1).float()
        return proj, (pred.reshape(n, k, -1).float() if pred is not None else None)

"""Multi-level features: the ResNet stages C2–C5 (DetCo's levels) and SoCo's detector-aligned RoI network.

``SoCoNet`` = ``models.ResNetTrunk`` → ``torchvision.ops.FeaturePyramidNetwork`` (P2–P5, 256 channels, no extra
level) → ``torchvision.ops.roi_align`` (7 x 7, ``aligned=True``) of every box **only at its assigned level** →
torchvision's ``FastRCNNConvFCHead`` (4 x (conv 3x3 + BN + ReLU), FC 1024 + ReLU) → projector (→ predictor).
Module names follow torchvision's detectors (``backbone`` = the ResNet body, ``fpn``, ``head`` = the box
head), so ``checkpoint`` can export them under ``maskrcnn_resnet50_fpn`` keys unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.ops import FeaturePyramidNetwork, roi_align

from .models import ResNetTrunk, mlp


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


class SoCoNet(nn.Module):
    """Backbone + FPN + RoI head + projector (+ predictor for the online branch).

    ``forward(views, boxes, levels)`` takes per view v: images (B, 3, S_v, S_v) float, boxes (B, M_v, 4) float
    ``[x0, y0, x1, y1]`` in that view's pixels (continuous; ``aligned=True`` samples pixel centres), levels
    (B, M_v) int64 in 0..3 (P2..P5). Views of equal side share one pass through backbone and FPN; all RoIs of
    all views form one batch for the head and MLPs (one BatchNorm batch). Returns ``(projections,
    predictions)``: lists of (B, M_v, proj_dim) float32, predictions None without a predictor.
    """

    def __init__(self, backbone: str, fpn_channels: int, roi_size: int, sampling_ratio: int, head_fc: int,
                 proj_hidden: int, proj_dim: int, pred_hidden: int | None) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone)
        self.fpn = FeaturePyramidNetwork(stage_channels(self.backbone), fpn_channels)
        self.head = FastRCNNConvFCHead((fpn_channels, roi_size, roi_size), [fpn_channels] * 4, [head_fc],
                                       norm_layer=nn.BatchNorm2d)
        self.projector = mlp(head_fc, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim) if pred_hidden else None
        self.roi_size, self.sampling_ratio = roi_size, sampling_ratio

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """[P2, P3, P4, P5] (N, fpn_channels, S/4 … S/32) of (N, 3, S, S) images."""
        feats = stage_features(self.backbone, x)
        return list(self.fpn(OrderedDict((f"c{i + 2}", f) for i, f in enumerate(feats))).values())

    def pool(self, views: Sequence[Tensor], boxes: Sequence[Tensor], levels: Sequence[Tensor]) -> Tensor:
        """(Σ_v B M_v, C, roi, roi) RoI features in view order, each box pooled at its assigned level only."""
        counts = [b.shape[0] * b.shape[1] for b in boxes]
        starts = [sum(counts[:v]) for v in range(len(counts))]
        by_size: dict[int, list[int]] = {}
        for v, x in enumerate(views):
            by_size.setdefault(int(x.shape[-1]), []).append(v)
        pieces, order = [], []
        unused: Tensor | int = 0
        for size, members in by_size.items():
            feats = self.pyramid(torch.cat([views[v] for v in members]))
            for level, feat in enumerate(feats):
                rois, where = [], []
                offset = 0
                for v in members:
                    n, m = boxes[v].shape[:2]
                    sel = torch.nonzero(levels[v].reshape(-1) == level).squeeze(1)
                    image = torch.div(sel, m, rounding_mode="floor") + offset
                    rois.append(torch.cat([image[:, None].to(boxes[v].dtype), boxes[v].reshape(-1, 4)[sel]], 1))
                    where.append(sel + starts[v])
                    offset += n
                r = torch.cat(rois)
                if r.shape[0] == 0:
                    # no box at this level: keep its FPN output in the graph (zero gradient), so every
                    # parameter gets a gradient each step, as DDP requires
                    unused = unused + feat.sum() * 0.0
                    continue
                # exact feature/view ratio (1/4 … 1/32 for sides divisible by 32), as SoCo scales its boxes
                scale = feat.shape[-1] / size
                # float32 boxes and features (bf16 would round box corners to ~1 px at 224), as SoCo does
                pieces.append(roi_align(feat.float(), r.float(), self.roi_size, spatial_scale=scale,
                                        sampling_ratio=self.sampling_ratio, aligned=True))
                order.append(torch.cat(where))
        pooled, order_t = torch.cat(pieces), torch.cat(order)
        inverse = torch.empty_like(order_t)
        inverse[order_t] = torch.arange(order_t.numel(), device=order_t.device)
        return pooled[inverse] + unused

    def forward(self, views: Sequence[Tensor], boxes: Sequence[Tensor],
                levels: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor] | None]:
        pooled = self.pool(views, boxes, levels)
        proj = self.projector(self.head(pooled))
        pred = self.predictor(proj) if self.predictor is not None else None
        shapes = [(b.shape[0], b.shape[1]) for b in boxes]
        return _split(proj, shapes), (_split(pred, shapes) if pred is not None else None)


def _split(x: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """(Σ B M_v, D) → per view (B, M_v, D) float32."""
    parts = torch.split(x, [n * m for n, m in shapes])
    return [p.reshape(n, m, -1).float() for p, (n, m) in zip(parts, shapes, strict=True)]

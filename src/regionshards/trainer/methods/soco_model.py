"""SoCo and SoCo* (Wei et al. 2021; hologerry/SoCo ``contrast/models/SoCo_FPN.py``): networks, the EMA
target, and the BYOL loss over matched proposal boxes.

``SoCoNet`` = ``networks.ResNetTrunk`` → ``torchvision.ops.FeaturePyramidNetwork`` (P2–P5, 256 channels, no
extra level; BatchNorm after every lateral and output conv, as SoCo builds mmdet's FPN with ``norm_cfg=BN``) →
``torchvision.ops.roi_align`` (7 x 7, ``aligned=True``) of every box **only at its assigned level** →
torchvision's ``FastRCNNConvFCHead`` (4 x (conv 3x3 + BN + ReLU), FC 1024 + ReLU) → projector (→ predictor).
Module names follow torchvision's detectors (``backbone`` = the ResNet body, ``fpn``, ``head`` = the box head),
so ``exports`` can write them under ``maskrcnn_resnet50_fpn_v2`` keys unchanged.

Online = ``SoCoNet`` with a predictor; target = an EMA copy without predictor (no gradient, BatchNorm in
training mode, as in BYOL and DetCon-B), momentum ``1 - (1 - soco.ema_base) (cos(pi t / T) + 1) / 2`` (0.99 → 1).
All views go through the online network in **one** call (one DDP forward per step) and through the target in one.

Loss of a view pair (a = V1, b = Vj) over a batch, with L2-normalised vectors: per image the mean of
``2 - 2 cos(pred_a[k], target_b[l])`` over the matched box pairs (k, l) — same proposal id; padded duplicates
match each other, as in SoCo's correspondence matrix — then the mean over images; symmetrised (+ the same with
``pred_b`` against ``target_a``) and summed over the pairs (V1, V2), (V1, V3) (SoCo* adds (V1, V4)). SoCo's code
returns ``-2 cos`` per term; the constant 2 here makes each term BYOL's non-negative 2 - 2 cos.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.ops import FeaturePyramidNetwork, roi_align

from ..config import TrainConfig
from ..networks import ResNetTrunk, cosine_momentum, ema_update, mlp, stage_channels, stage_features
from . import method_spec


def box_byol_loss(pred: Tensor, target: Tensor, ids_pred: Tensor, ids_target: Tensor) -> Tensor:
    """Scalar float32: mean over images of the mean ``2 - 2 cos`` over matched (same-id) box pairs.

    Args:
        pred: (B, K, D) online predictions of one view's boxes; target: (B, L, D) target projections of the
            other view's boxes (detach them).
        ids_pred, ids_target: (B, K) and (B, L) integer proposal ids; box k matches box l when the ids agree.
            An image without any match contributes 0.
    """
    p = F.normalize(pred.float(), dim=-1)
    z = F.normalize(target.float(), dim=-1)
    cos = torch.einsum("bkd,bld->bkl", p, z)
    match = (ids_pred[:, :, None] == ids_target[:, None, :]).to(cos.dtype)
    per_image = (match * (2.0 - 2.0 * cos)).sum((1, 2)) / match.sum((1, 2)).clamp(min=1.0)
    return per_image.mean()


class SoCoNet(nn.Module):
    """Backbone + FPN + RoI head + projector (+ predictor for the online branch).

    ``forward(views, boxes, levels)`` takes per view v: images (B, 3, S_v, S_v) float, boxes (B, M_v, 4) float
    ``[x0, y0, x1, y1]`` in that view's pixels (continuous; ``aligned=True`` samples pixel centres), levels
    (B, M_v) int64 in 0..3 (P2..P5). Views of equal side share one pass through backbone and FPN; all RoIs of
    all views form one batch for the head and MLPs (one BatchNorm batch). Returns ``(projections,
    predictions)``: lists of (B, M_v, proj_dim) float32, predictions None without a predictor.
    """

    def __init__(self, backbone: str, fpn_channels: int, roi_size: int, sampling_ratio: int, head_fc: int,
                 proj_hidden: int, proj_dim: int, pred_hidden: int | None, *, fpn_norm: bool = True,
                 zero_init_residual: bool = False, bn_per_view: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone, zero_init_residual=zero_init_residual)
        # SoCo's FPN (mmdet's, norm_cfg=BN): BatchNorm after every lateral and output conv, convs without bias
        # (torchvision's Conv2dNormActivation drops the bias when given a norm layer)
        self.fpn = FeaturePyramidNetwork(stage_channels(self.backbone), fpn_channels,
                                         norm_layer=nn.BatchNorm2d if fpn_norm else None)
        self.head = FastRCNNConvFCHead((fpn_channels, roi_size, roi_size), [fpn_channels] * 4, [head_fc],
                                       norm_layer=nn.BatchNorm2d)
        self.projector = mlp(head_fc, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim) if pred_hidden else None
        self.roi_size, self.sampling_ratio = roi_size, sampling_ratio
        self.bn_per_view = bn_per_view

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
            # per view: BatchNorm statistics of one view at a time (the reference runs the encoder per view)
            by_size.setdefault(v if self.bn_per_view else int(x.shape[-1]), []).append(v)
        pieces, order = [], []
        unused: Tensor | int = 0
        for members in by_size.values():
            size = int(views[members[0]].shape[-1])
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


class SoCoC4Net(nn.Module):
    """SoCo-C4 (hologerry/SoCo ``contrast/models/SoCo_C4.py`` with ``contrast/resnet.py``'s
    ``use_roi_align_on_c4``): ResNet up to C4 (``layer3``, stride 16) → ``roi_align`` 14 x 14 (``aligned=True``)
    of every box → ``layer4`` (res5 as the RoI head, stride 2 → 7 x 7) → average pool → projector (→ predictor).
    The whole image never goes through res5, as in the reference. Same ``forward`` as ``SoCoNet`` (``levels``
    unused); views of equal side share one pass to C4.
    """

    def __init__(self, backbone: str, roi_size: int, sampling_ratio: int, proj_hidden: int, proj_dim: int,
                 pred_hidden: int | None, *, zero_init_residual: bool = False, bn_per_view: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone, zero_init_residual=zero_init_residual)
        self.projector = mlp(self.backbone.out_channels, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim) if pred_hidden else None
        self.roi_size, self.sampling_ratio = 2 * roi_size, sampling_ratio  # 14 before res5's stride 2 → 7
        self.bn_per_view = bn_per_view

    def pool(self, views: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """(Σ_v B M_v, C4 channels, 2 roi, 2 roi) RoI features of C4 in view order."""
        trunk = self.backbone
        by_size: dict[int, list[int]] = {}
        for v, x in enumerate(views):
            by_size.setdefault(v if self.bn_per_view else int(x.shape[-1]), []).append(v)
        pieces: dict[int, Tensor] = {}
        for members in by_size.values():
            size = int(views[members[0]].shape[-1])
            x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(torch.cat([views[v] for v in members])))))
            c4 = trunk.layer3(trunk.layer2(trunk.layer1(x)))
            offset = 0
            for v in members:
                n, m = boxes[v].shape[:2]
                image = torch.arange(n, device=c4.device).repeat_interleave(m) + offset
                rois = torch.cat([image[:, None].float(), boxes[v].reshape(-1, 4).float()], 1)
                pieces[v] = roi_align(c4.float(), rois, self.roi_size, spatial_scale=c4.shape[-1] / size,
                                      sampling_ratio=self.sampling_ratio, aligned=True)
                offset += n
        return torch.cat([pieces[v] for v in range(len(views))])

    def forward(self, views: Sequence[Tensor], boxes: Sequence[Tensor],
                levels: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor] | None]:
        pooled = self.pool(views, boxes).to(views[0].dtype)
        shapes = [(b.shape[0], b.shape[1]) for b in boxes]
        # res5 and the MLPs once per view (BatchNorm per view, as the reference's encoder calls) or all at once
        chunks = pooled.split([n * m for n, m in shapes]) if self.bn_per_view else (pooled,)
        projs = [self.projector(self.backbone.layer4(c).mean((2, 3))) for c in chunks]
        proj = torch.cat(projs)
        pred = torch.cat([self.predictor(p) for p in projs]) if self.predictor is not None else None
        return _split(proj, shapes), (_split(pred, shapes) if pred is not None else None)


class SoCo(nn.Module):
    """Networks and loss of SoCo / SoCo* for one config (``online`` is the module to wrap in DDP)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sc = cfg.soco
        args = (cfg.backbone, sc.fpn_channels, sc.roi_size, sc.roi_sampling_ratio, sc.head_fc, cfg.proj_hidden,
                cfg.proj_dim)
        zero = bool(cfg.zero_init_residual)
        if method_spec(cfg.method).option("c4"):
            c4 = (cfg.backbone, sc.roi_size, sc.roi_sampling_ratio, cfg.proj_hidden, cfg.proj_dim)
            kw4 = {"zero_init_residual": zero, "bn_per_view": cfg.bn_per_view}
            self.online: nn.Module = SoCoC4Net(*c4, cfg.pred_hidden, **kw4)
            self.target: nn.Module = SoCoC4Net(*c4, None, **kw4)
        else:
            kw = {"fpn_norm": sc.fpn_norm, "zero_init_residual": zero, "bn_per_view": cfg.bn_per_view}
            self.online = SoCoNet(*args, cfg.pred_hidden, **kw)
            self.target = SoCoNet(*args, None, **kw)
        self.target.load_state_dict({k: v for k, v in self.online.state_dict().items()
                                     if not k.startswith("predictor.")})
        self.target.requires_grad_(False)

    @staticmethod
    def network_inputs(batch: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per view (images, boxes, levels) from a batch: V1 gets every pair's V1 boxes, (B, P K, 4)."""
        src = batch
        boxes, levels = batch["boxes"], batch["levels"]
        pairs = boxes.shape[0]
        views = [src[f"view{v}"] for v in range(pairs + 1)]
        per_boxes = [torch.cat(list(boxes[:, 0]), dim=1)] + [boxes[p, 1] for p in range(pairs)]
        per_levels = [torch.cat(list(levels[:, 0]), dim=1)] + [levels[p, 1] for p in range(pairs)]
        return views, per_boxes, per_levels

    def loss(self, batch: Mapping[str, Tensor], online: nn.Module | None = None,
             autocast: Callable[[], AbstractContextManager] = nullcontext) -> Tensor:
        """Scalar float32 loss of a batch on the device (``soco_views`` keys, ``runtime.to_device``).

        Args:
            batch: ``view0`` … normalised (B, 3, S_v, S_v) float views, ``boxes`` (P, 2, B, K, 4) float,
                ``levels`` (P, 2, B, K) and ``box_ids`` (P, 2, B, K) integer (per side; (P, B, K): both sides alike).
            online: the (possibly DDP-wrapped) online network; defaults to ``self.online``.
            autocast: context for the networks (bf16 on CUDA); the loss is float32.
        """
        online = online or self.online
        views, boxes, levels = self.network_inputs(batch)
        with autocast():
            _, pred = online(views, boxes, levels)
        with torch.no_grad(), autocast():
            target, _ = self.target(views, boxes, levels)
        assert pred is not None
        ids = batch["box_ids"]
        if ids.dim() == 3:  # one id list for both sides of each pair
            ids = ids[:, None].expand(-1, 2, -1, -1)
        k = ids.shape[-1]
        total = pred[0].new_zeros(())
        for p in range(ids.shape[0]):
            a = slice(p * k, (p + 1) * k)
            total = total + box_byol_loss(pred[0][:, a], target[p + 1].detach(), ids[p, 0], ids[p, 1])
            total = total + box_byol_loss(pred[p + 1], target[0][:, a].detach(), ids[p, 1], ids[p, 0])
        return total

    @torch.no_grad()
    def update_target(self, step: int, total: int) -> float:
        """EMA step of the target towards the online network; returns the momentum used."""
        m = cosine_momentum(step, total, self.cfg.soco.ema_base)
        ema_update(self.target, self.online, m)
        return m


Model = SoCo

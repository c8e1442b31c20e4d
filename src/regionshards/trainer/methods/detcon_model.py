"""DetCon-B (BYOL) and DetCon-S (SimCLR) as one object: networks, the EMA target, and the loss of a batch.

DetCon-B: online = trunk + projector + predictor; target = an EMA copy of trunk + projector (no gradient,
BatchNorm in training mode as in BYOL) whose momentum rises from ``ema_base`` to 1 on a cosine,
``m(t) = 1 - (1 - ema_base) (cos(pi t / T) + 1) / 2``. DetCon-S: one network, trunk + projector, used for both
roles of the loss. Both views go through a network in one forward pass of 2B images (one DDP call per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..networks import ResNetTrunk, cosine_momentum, ema_update, mlp
from . import method_spec
from .detcon_loss import detcon_b_loss, detcon_s_loss


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

    def __init__(self, backbone: str, proj_hidden: int, proj_dim: int, pred_hidden: int | None, *,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone, zero_init_residual=zero_init_residual)
        self.projector = mlp(self.backbone.out_channels, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim) if pred_hidden else None

    def forward(self, images: Tensor, grids: Tensor, ids: Tensor, views: int = 1) -> tuple[Tensor, Tensor | None]:
        """``views`` > 1: the batch is that many equal view batches, each normalised by BatchNorm on its own
        (trunk and heads run once per view, as the reference applies the network per view)."""
        projs, preds = [], []
        for x, g, i in zip(images.chunk(views), grids.chunk(views), ids.chunk(views), strict=True):
            pooled = mask_pool(self.backbone(x), grid_masks(g, i))
            n, k, c = pooled.shape
            proj = self.projector(pooled.reshape(n * k, c))
            pred = self.predictor(proj) if self.predictor is not None else None
            projs.append(proj.reshape(n, k, -1).float())
            preds.append(pred.reshape(n, k, -1).float() if pred is not None else None)
        return torch.cat(projs), (torch.cat(preds) if preds[0] is not None else None)


class DetCon(nn.Module):
    """Networks and loss of DetCon-B / DetCon-S for one config.

    ``online`` is the module to train (wrap it in DDP); ``target`` is the EMA network (DetCon-B) or None.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.is_byol = method_spec(cfg.method).option("objective") == "byol"
        zero = bool(cfg.zero_init_residual)
        self.online = DetConNet(cfg.backbone, cfg.proj_hidden, cfg.proj_dim, cfg.pred_hidden if self.is_byol else None,
                                zero_init_residual=zero)
        self.target: DetConNet | None = None
        if self.is_byol:
            self.target = DetConNet(cfg.backbone, cfg.proj_hidden, cfg.proj_dim, None, zero_init_residual=zero)
            self.target.load_state_dict(_without_predictor(self.online.state_dict()))
            self.target.requires_grad_(False)

    def loss(self, batch: Mapping[str, Tensor], online: nn.Module | None = None,
             autocast: Callable[[], AbstractContextManager] = nullcontext) -> Tensor:
        """Scalar float32 loss of a batch on the device (``runtime.to_device``).

        Args:
            batch: ``view0``/``view1`` normalised (B, 3, S, S) float views, ``grid0``/``grid1`` (B, G, G) and
                ``ids0``/``ids1`` (B, K) integer tensors.
            online: the (possibly DDP-wrapped) online network; defaults to ``self.online``.
            autocast: context for the networks' forward passes (bf16 on CUDA); the loss itself is float32.
        """
        online = online or self.online
        v0, v1 = batch["view0"], batch["view1"]
        b = v0.shape[0]
        x = torch.cat([v0, v1])
        grids = torch.cat([batch["grid0"], batch["grid1"]])
        ids = torch.cat([batch["ids0"], batch["ids1"]])
        views = 2 if self.cfg.bn_per_view else 1
        with autocast():
            proj, pred = online(x, grids, ids, views)
        t = self.cfg.temperature
        if not self.is_byol:
            return detcon_s_loss(proj[:b], proj[b:], batch["ids0"], batch["ids1"], temperature=t)
        assert self.target is not None and pred is not None
        with torch.no_grad(), autocast():
            target, _ = self.target(x, grids, ids, views)
        return detcon_b_loss(pred[:b], pred[b:], target[:b], target[b:], batch["ids0"], batch["ids1"], temperature=t)

    @torch.no_grad()
    def update_target(self, step: int, total: int) -> float:
        """EMA step of the target towards the online trunk + projector; returns the momentum used (B only)."""
        if self.target is None:
            return 0.0
        m = cosine_momentum(step, total, self.cfg.ema_base)
        ema_update(self.target, self.online, m)
        return m


def _without_predictor(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if not k.startswith("predictor.")}


Model = DetCon

"""SoCo and SoCo* (methods §3): networks, the EMA target, and the BYOL loss over matched proposal boxes.

Online = ``pyramid.SoCoNet`` with a predictor; target = an EMA copy without predictor (no gradient, BatchNorm in
training mode, as in BYOL and DetCon-B), momentum ``1 - (1 - soco.ema_base) (cos(pi t / T) + 1) / 2`` (0.99 → 1).
All views go through the online network in **one** call (one DDP forward per step) and through the target in one.

Loss of a view pair (a = V1, b = Vj) over a batch, with L2-normalised vectors: per image the mean of
``2 - 2 cos(pred_a[k], target_b[l])`` over the matched box pairs (k, l) — same proposal id; padded duplicates
match each other, as in SoCo's correspondence matrix — then the mean over images; symmetrised (+ the same with
``pred_b`` against ``target_a``) and summed over the pairs (V1, V2), (V1, V3) (SoCo* adds (V1, V4)). SoCo's code
returns ``-2 cos`` per term; the constant 2 here makes each term BYOL's non-negative 2 - 2 cos.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig
from .detcon import cosine_momentum
from .pyramid import SoCoNet


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


class SoCo(nn.Module):
    """Networks and loss of SoCo / SoCo* for one config (``online`` is the module to wrap in DDP)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sc = cfg.soco
        args = (cfg.backbone, sc.fpn_channels, sc.roi_size, sc.roi_sampling_ratio, sc.head_fc, cfg.proj_hidden,
                cfg.proj_dim)
        self.online = SoCoNet(*args, cfg.pred_hidden)
        self.target = SoCoNet(*args, None)
        self.target.load_state_dict({k: v for k, v in self.online.state_dict().items()
                                     if not k.startswith("predictor.")})
        self.target.requires_grad_(False)

    @staticmethod
    def network_inputs(batch: Mapping[str, Tensor], images: Mapping[str, Tensor] | None = None
                       ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per view (images, boxes, levels) from a batch: V1 gets every pair's V1 boxes, (B, P K, 4)."""
        src = images if images is not None else batch
        boxes, levels = batch["boxes"], batch["levels"]
        pairs = boxes.shape[0]
        views = [src[f"view{v}"] for v in range(pairs + 1)]
        per_boxes = [torch.cat(list(boxes[:, 0]), dim=1)] + [boxes[p, 1] for p in range(pairs)]
        per_levels = [torch.cat(list(levels[:, 0]), dim=1)] + [levels[p, 1] for p in range(pairs)]
        return views, per_boxes, per_levels

    def loss(self, batch: Mapping[str, Tensor], online: nn.Module | None = None,
             images: Mapping[str, Tensor] | None = None,
             autocast: Callable[[], AbstractContextManager] = nullcontext) -> Tensor:
        """Scalar float32 loss of a batch (``soco_views`` keys on the device).

        Args:
            batch: ``boxes`` (P, 2, B, K, 4) float, ``levels`` (P, 2, B, K) and ``box_ids`` (P, B, K) integer.
            online: the (possibly DDP-wrapped) online network; defaults to ``self.online``.
            images: ``view0`` … normalised (B, 3, S_v, S_v) float views (default: the batch's).
            autocast: context for the networks (bf16 on CUDA); the loss is float32.
        """
        online = online or self.online
        views, boxes, levels = self.network_inputs(batch, images)
        with autocast():
            _, pred = online(views, boxes, levels)
        with torch.no_grad(), autocast():
            target, _ = self.target(views, boxes, levels)
        assert pred is not None
        ids = batch["box_ids"]
        k = ids.shape[-1]
        total = pred[0].new_zeros(())
        for p in range(ids.shape[0]):
            a = slice(p * k, (p + 1) * k)
            total = total + box_byol_loss(pred[0][:, a], target[p + 1].detach(), ids[p], ids[p])
            total = total + box_byol_loss(pred[p + 1], target[0][:, a].detach(), ids[p], ids[p])
        return total

    @torch.no_grad()
    def update_target(self, step: int, total: int) -> float:
        """EMA step of the target towards the online network; returns the momentum used."""
        m = cosine_momentum(step, total, self.cfg.soco.ema_base)
        ema_update(self.target, self.online, m)
        return m


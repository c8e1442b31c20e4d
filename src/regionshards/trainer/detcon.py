"""DetCon-B (BYOL) and DetCon-S (SimCLR) as one object: networks, the EMA target, and the loss of a batch.

DetCon-B: online = trunk + projector + predictor; target = an EMA copy of trunk + projector (no gradient,
BatchNorm in training mode as in BYOL) whose momentum rises from ``ema_base`` to 1 on a cosine,
``m(t) = 1 - (1 - ema_base) (cos(pi t / T) + 1) / 2``. DetCon-S: one network, trunk + projector, used for both
roles of the loss. Both views go through a network in one forward pass of 2B images (one DDP call per step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .losses import detcon_b_loss, detcon_s_loss
from .models import DetConNet


def cosine_momentum(step: int, total: int, base: float) -> float:
    """EMA momentum at ``step`` of ``total``: ``base`` at 0, rising to 1 on a half cosine."""
    if total <= 0:
        return 1.0
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / total) + 1.0) / 2.0


class DetCon(nn.Module):
    """Networks and loss of DetCon-B / DetCon-S for one config.

    ``online`` is the module to train (wrap it in DDP); ``target`` is the EMA network (DetCon-B) or None.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.is_byol = cfg.method == "detcon-b"
        self.online = DetConNet(cfg.backbone, cfg.proj_hidden, cfg.proj_dim, cfg.pred_hidden if self.is_byol else None)
        self.target: DetConNet | None = None
        if self.is_byol:
            self.target = DetConNet(cfg.backbone, cfg.proj_hidden, cfg.proj_dim, None)
            self.target.load_state_dict(_without_predictor(self.online.state_dict()))
            self.target.requires_grad_(False)

    def loss(self, batch: Mapping[str, Tensor], online: nn.Module | None = None,
             images: tuple[Tensor, Tensor] | None = None,
             autocast: Callable[[], AbstractContextManager] = nullcontext) -> Tensor:
        """Scalar float32 loss of a batch.

        Args:
            batch: ``grid0``/``grid1`` (B, G, G) and ``ids0``/``ids1`` (B, K) integer tensors on the device.
            online: the (possibly DDP-wrapped) online network; defaults to ``self.online``.
            images: the two normalised (B, 3, S, S) float views on the device (default ``view0``/``view1``).
            autocast: context for the networks' forward passes (bf16 on CUDA); the loss itself is float32.
        """
        online = online or self.online
        v0, v1 = images if images is not None else (batch["view0"], batch["view1"])
        b = v0.shape[0]
        x = torch.cat([v0, v1])
        grids = torch.cat([batch["grid0"], batch["grid1"]])
        ids = torch.cat([batch["ids0"], batch["ids1"]])
        with autocast():
            proj, pred = online(x, grids, ids)
        t = self.cfg.temperature
        if not self.is_byol:
            return detcon_s_loss(proj[:b], proj[b:], batch["ids0"], batch["ids1"], temperature=t)
        assert self.target is not None and pred is not None
        with torch.no_grad(), autocast():
            target, _ = self.target(x, grids, ids)
        return detcon_b_loss(pred[:b], pred[b:], target[:b], target[b:], batch["ids0"], batch["ids1"], temperature=t)

    @torch.no_grad()
    def update_target(self, step: int, total: int) -> float:
        """EMA step of the target towards the online trunk + projector; returns the momentum used (B only)."""
        if self.target is None:
            return 0.0
        m = cosine_momentum(step, total, self.cfg.ema_base)
        online = dict(self.online.named_parameters())
        pairs = [(p, online[name]) for name, p in self.target.named_parameters()]
        targets = [p for p, _ in pairs]
        torch._foreach_mul_(targets, m)
        torch._foreach_add_(targets, [q.detach() for _, q in pairs], alpha=1.0 - m)
        online_buffers = dict(self.online.named_buffers())
        for name, buf in self.target.named_buffers():
            buf.copy_(online_buffers[name])
        return m


def _without_predictor(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if not k.startswith("predictor.")}


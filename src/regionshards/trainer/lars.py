"""LARS (as in BYOL/DetCon: optax ``lars``) and the learning-rate schedule: linear warmup, then cosine to 0.

Update for a parameter p with gradient g (one step, learning rate lr):

    u = g + wd * p                                   (weight decay, not for biases and norm parameters)
    u = u * eta * ||p|| / ||u||   if ||p|| > 0 and ||u|| > 0   (trust ratio, not for biases and norms)
    v = momentum * v + lr * u;   p = p - v

Biases and normalisation parameters (every parameter with one dimension) get neither weight decay nor the
trust ratio (``param_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decay + trust ratio) and 1-D parameters — biases, BatchNorm (neither)."""
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lars": True},
            {"params": plain, "weight_decay": 0.0, "lars": False}]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with momentum (see the module docstring for the update)."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, eta: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or momentum < 0 or eta <= 0 or weight_decay < 0:
            raise ValueError("LARS needs lr >= 0, momentum >= 0, eta > 0, weight_decay >= 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eta": eta, "weight_decay": weight_decay,
                                  "lars": True})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, eta, wd = group["lr"], group["momentum"], group["eta"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.float()
                param = p.float()
                if wd:
                    update = update.add(param, alpha=wd)
                if group["lars"]:
                    p_norm, u_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(update)
                    trust = torch.where((p_norm > 0) & (u_norm > 0), eta * p_norm / u_norm,
                                        torch.ones_like(p_norm))
                    update = update * trust
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(param)
                buf = state["momentum"]
                buf.mul_(mom).add_(update, alpha=lr)
                p.sub_(buf.to(p.dtype))
        return loss


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """lr of 0-based ``step``: ``peak * (step + 1) / warmup`` during warmup, then a half cosine from peak to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def peak_learning_rate(base_lr: float, global_batch: int, batch_base: int = 256) -> float:
    """Linear scaling: ``base_lr * global_batch / batch_base`` (0.2 x B/256 for DetCon)."""
    return base_lr * global_batch / batch_base

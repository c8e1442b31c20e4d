"""The methods the loop can train, behind one interface: build the method module, its optimiser groups, its
batches on the device.

Every method object has ``online`` (the module to train and wrap in DDP; one forward call per step),
``loss(batch, online=, images=, autocast=)`` (scalar float32) and ``update_target(step, total)`` (returns the
target momentum, 0 without a target). DetCon takes its two normalised views as a tuple (``loop._to_device``);
SoCo and DetCo take a dict of every normalised image batch of the batch (``to_device``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .lars import param_groups
from .transforms import normalize

DETCON = ("detcon-b", "detcon-s")
SOCO = ("soco", "soco-star")


def make_method(cfg: TrainConfig) -> nn.Module:
    """The method module of ``cfg.method`` (imports only that method's code)."""
    if cfg.method in DETCON:
        from .detcon import DetCon

        return DetCon(cfg)
    if cfg.method in SOCO:
        from .soco import SoCo

        return SoCo(cfg)
    if cfg.method == "detco":
        from .detco import DetCo

        return DetCo(cfg)
    raise ValueError(f"unknown method {cfg.method!r}")


def optimizer_groups(method: nn.Module, cfg: TrainConfig) -> list[dict]:
    """LARS groups of the online network: DetCon and SoCo exclude biases and norms from weight decay and the
    trust ratio; DetCo (MoCo v2's SGD) decays every parameter and uses no trust ratio."""
    if cfg.method == "detco":
        params = [p for p in method.online.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": cfg.weight_decay, "lars": False}]
    return param_groups(method.online, cfg.weight_decay)


def has_target(cfg: TrainConfig) -> bool:
    """Whether the method keeps an EMA / momentum target (its momentum is logged as ``ema``)."""
    return cfg.method != "detcon-s"


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool, mean: tuple[float, ...],
              std: tuple[float, ...]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Move a SoCo / DetCo batch: ``(tensors, images)``.

    uint8 tensors are image batches (..., 3, H, W) and come back normalised float32 in ``images`` (4-D ones in
    channels_last on CUDA); every other tensor (boxes, levels, ids) comes back as it is in ``tensors``.
    """
    tensors, images = {}, {}
    for name, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        x = value.to(device, non_blocking=True)
        if value.dtype != torch.uint8:
            tensors[name] = x
            continue
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            images[name] = normalize(x, mean, std)
        else:
            images[name] = normalize(x.reshape(-1, *x.shape[-3:]), mean, std).reshape(x.shape)
    return tensors, images
